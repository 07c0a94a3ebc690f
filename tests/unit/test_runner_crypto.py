"""The chunked AES-256-GCM format: round trips at every size that matters, and every kind of damage is caught."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest

from runner.crypto import (
    HEADER_SIZE,
    MIN_CHUNK_SIZE,
    TAG_SIZE,
    Decryptor,
    Encryptor,
    Key,
    Keyring,
    fingerprint,
    load_key,
    load_keyring,
)
from runner.errors import RunnerError

KEY = bytes(range(32))
CHUNK = MIN_CHUNK_SIZE


def encrypt(plain: bytes, key: bytes = KEY, pieces: int = 7) -> bytes:
    out = io.BytesIO()
    encryptor = Encryptor(key, out, chunk_size=CHUNK)
    step = max(1, len(plain) // pieces)
    for start in range(0, len(plain), step):
        encryptor.write(plain[start : start + step])
    encryptor.close()
    return out.getvalue()


def decrypt(blob: bytes, key: bytes | Keyring = KEY, read_size: int = 333) -> bytes:
    decryptor = Decryptor(key, io.BytesIO(blob))
    parts = []
    while piece := decryptor.read(read_size):
        parts.append(piece)
    return b"".join(parts)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17])
def test_any_length_comes_back_unchanged(size: int) -> None:
    plain = os.urandom(size)
    blob = encrypt(plain)
    chunks = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER_SIZE + size + chunks * TAG_SIZE
    assert decrypt(blob) == plain


def test_two_encryptions_of_the_same_data_differ() -> None:
    assert encrypt(b"same") != encrypt(b"same")


def test_a_wrong_key_is_named_as_such() -> None:
    with pytest.raises(RunnerError, match="wrong key") as caught:
        decrypt(encrypt(b"secret data"), key=bytes(32))
    assert caught.value.reason == "DecryptFailed"


def damaged(kind: str, blob: bytes) -> bytes:
    data = bytearray(blob)
    record = CHUNK + TAG_SIZE
    if kind == "flipped ciphertext byte":
        data[HEADER_SIZE + 5] ^= 1
    elif kind == "flipped tag byte":
        data[HEADER_SIZE + record - 1] ^= 1
    elif kind == "cut at a chunk boundary":
        del data[HEADER_SIZE + record :]
    elif kind == "cut inside a chunk":
        del data[-10:]
    elif kind == "data appended":
        data += b"x" * 20
    elif kind == "a chunk appended again":
        data += data[HEADER_SIZE : HEADER_SIZE + record]
    elif kind == "chunks swapped":
        first, second = data[HEADER_SIZE : HEADER_SIZE + record], data[HEADER_SIZE + record : HEADER_SIZE + 2 * record]
        data[HEADER_SIZE : HEADER_SIZE + 2 * record] = second + first
    elif kind == "chunk size in the header changed":
        data[11] ^= 1
    return bytes(data)


@pytest.mark.parametrize(
    "kind",
    [
        "flipped ciphertext byte",
        "flipped tag byte",
        "cut at a chunk boundary",
        "cut inside a chunk",
        "data appended",
        "a chunk appended again",
        "chunks swapped",
        "chunk size in the header changed",
    ],
)
def test_damage_is_never_decrypted_into_data(kind: str) -> None:
    blob = encrypt(os.urandom(3 * CHUNK + 100))
    with pytest.raises(RunnerError) as caught:
        decrypt(damaged(kind, blob))
    assert caught.value.reason == "DecryptFailed"


def test_a_file_that_is_not_encrypted_is_refused() -> None:
    with pytest.raises(RunnerError, match="not an encrypted backup"):
        decrypt(b"PGDMP" + bytes(100))


@pytest.mark.parametrize(
    "content",
    [KEY, KEY.hex().encode() + b"\n", base64.b64encode(KEY) + b"\n", b"  " + KEY.hex().upper().encode()],
    ids=["raw", "hex", "base64", "hex with spaces"],
)
def test_a_key_file_may_hold_raw_hex_or_base64(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    assert load_key(path) == Key("key", KEY)


@pytest.mark.parametrize("content", [b"short", b"a" * 33, base64.b64encode(bytes(16)), b""])
def test_a_key_of_the_wrong_size_is_refused_without_quoting_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(RunnerError) as caught:
        load_key(path)
    assert caught.value.reason == "InvalidArguments"
    if content:
        assert content.decode() not in caught.value.message


def test_a_missing_key_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="there is no key 'absent'"):
        load_key(tmp_path / "absent")


KEY_B = bytes(range(100, 132))


def test_a_keyring_reads_each_file_with_the_key_it_was_written_with() -> None:
    ring = Keyring.of(Key("2026-11", KEY), Key("2026-12", KEY_B))
    assert decrypt(encrypt(b"old", key=KEY), key=ring) == b"old"
    assert decrypt(encrypt(b"new", key=KEY_B), key=ring) == b"new"
    assert ring.for_header(encrypt(b"new", key=KEY_B)[:HEADER_SIZE]) == Key("2026-12", KEY_B)
    assert ring.for_header(b"PGDMP" + bytes(100)) is None


def test_a_keyring_without_the_files_key_names_the_ids_it_holds() -> None:
    ring = Keyring.of(Key("2026-12", KEY_B))
    with pytest.raises(RunnerError, match=r"not among those given \(ids: '2026-12'\)") as caught:
        decrypt(encrypt(b"old", key=KEY), key=ring)
    assert caught.value.reason == "DecryptFailed"


def test_a_fingerprint_is_stable_distinct_and_not_the_key() -> None:
    assert fingerprint(KEY) == fingerprint(bytes(KEY))
    assert fingerprint(KEY) != fingerprint(KEY_B)
    assert len(fingerprint(KEY)) == 16
    assert fingerprint(KEY) not in (KEY.hex(), KEY_B.hex())
    assert KEY.hex() not in repr(Key("a", KEY))


def test_a_secret_entry_that_is_not_a_key_is_named_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The whole key Secret is mounted: an entry an author points at that holds something else (a password) is left
    # out by its name, and neither its content nor a key reaches a log line or a message.
    (tmp_path / "password").write_text("hunter2-not-a-key")
    (tmp_path / "2026-12").write_text(KEY_B.hex())
    ring = load_keyring(folder=tmp_path)
    assert ring.ids == ["2026-12"]
    with pytest.raises(RunnerError) as caught:
        decrypt(encrypt(b"old", key=KEY), key=ring)
    shown = capsys.readouterr()
    everything = shown.out + shown.err + caught.value.message
    assert "password" in everything
    assert "hunter2" not in everything
    assert KEY_B.hex() not in everything


def test_a_key_folder_is_read_as_a_secret_volume_lays_it_out(tmp_path: Path) -> None:
    # A Secret volume: the entries live in a timestamped folder, `..data` points at it, each key is a link.
    data = tmp_path / "..2026_12_07_09_00_00.1"
    data.mkdir()
    (data / "2026-11").write_text(KEY.hex() + "\n")
    (data / "2026-12").write_bytes(base64.b64encode(KEY_B))
    (data / "note").write_text("not a key")
    (tmp_path / "..data").symlink_to(data.name)
    for name in ("2026-11", "2026-12", "note"):
        (tmp_path / name).symlink_to(f"..data/{name}")
    ring = load_keyring(folder=tmp_path)
    assert ring.ids == ["2026-11", "2026-12"]
    assert ring.by_fingerprint(fingerprint(KEY_B)) == Key("2026-12", KEY_B)
    # The same key given twice (as the current key's file and in the folder) is one key.
    assert len(load_keyring([tmp_path / "2026-12"], tmp_path).keys) == 2
