"""A PostgreSQL WAL archive's keys and slot, without a server: an encrypted segment's entry names its key, and
`archive --drop-slot` parses without an archive to write. (A restore without the key: test_pitr_postgres_keys.)"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from runner.crypto import Key
from runner.main import parser
from runner.walarchive import WalEntry

KEY = Key("2026-12", bytes(range(32)))
SEGMENT = "000000010000000000000003"
PLAIN = WalEntry(
    SEGMENT, SEGMENT + ".zst", True, 1, "0/3000000", "0/4000000", "2026-12-07T10:00:00Z", 16 << 20, 9, "ab"
)
SEALED = replace(PLAIN, object=SEGMENT + ".zst.enc", key_id=KEY.id, key_fingerprint=KEY.fingerprint)


def test_an_encrypted_segment_s_entry_names_its_key_as_a_binlog_s_does() -> None:
    written = json.loads(SEALED.to_json())

    assert (written["keyId"], written["keyFingerprint"]) == ("2026-12", KEY.fingerprint)
    assert WalEntry.from_json(SEALED.to_json()) == SEALED
    assert SEALED.encrypted
    assert "keyId" not in json.loads(PLAIN.to_json())
    assert WalEntry.from_json(PLAIN.to_json()) == PLAIN
    assert not PLAIN.encrypted


CONNECTION = ["--engine", "postgresql", "--host", "db.shop.svc", "--user", "backup", "--name", "nightly"]


def test_drop_slot_needs_no_archive_and_waits_a_minute_unless_told() -> None:
    parsed = parser().parse_args(["archive", *CONNECTION, "--drop-slot"])
    told = parser().parse_args(["archive", *CONNECTION, "--drop-slot", "--timeout", "5"])

    assert (parsed.drop_slot, parsed.output_dir, parsed.output_url, parsed.slot_timeout) == (True, None, None, None)
    assert told.slot_timeout == 5.0
    assert parser().parse_args(["archive", *CONNECTION, "--output-dir", "/backups"]).drop_slot is False


def test_an_archive_run_has_no_deadline_of_its_own() -> None:
    """main() makes `timeout` the run's deadline: --drop-slot's wait must not become an archiver's."""
    parsed = parser().parse_args(["archive", *CONNECTION, "--drop-slot", "--timeout", "5"])

    assert getattr(parsed, "timeout", None) is None


def test_an_archive_may_not_go_to_a_folder_and_a_bucket_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["archive", *CONNECTION, "--output-dir", "/b", "--output-url", "s3://b/p"])

    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
