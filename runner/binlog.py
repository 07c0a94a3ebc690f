"""MySQL/MariaDB binary log coordinates: where a dump's consistent snapshot sits in the server's binlog.

A point-in-time restore loads a dump and then replays the binlog from exactly the dump's snapshot on. The
coordinates must be the snapshot's own, not "about then": a position read before or after the snapshot by another
connection would replay a write twice or lose one. So they come from the dump tool itself, in the dump's own
session: `mariadb-dump --single-transaction --master-data=2` starts the transaction WITH CONSISTENT SNAPSHOT and then
reads the MariaDB status `binlog_snapshot_file`/`binlog_snapshot_position`, which the server sets to the binlog
position of that very snapshot (no FLUSH TABLES WITH READ LOCK is taken). It writes them as a comment near the top
of the dump:

    -- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;

and, at its end, the GTID position that corresponds to them (`BINLOG_GTID_POS(file, position)`):

    -- SET GLOBAL gtid_slave_pos='0-1-42';

Both are comments (`=2`): the dump restores as before. `CoordinateSniffer` reads them off the dump stream on its
way to the compressor: the first line of the first kind in the dump's head (before any table data, nothing else
can precede it) and the last of the second kind in its tail (after every routine body).

MySQL (not MariaDB) has no such status: its dump tools take the position under FLUSH TABLES WITH READ LOCK, which
needs the RELOAD privilege a backup user may not have and stalls every write while it waits. A MySQL server with
binary logging on is therefore backed up as before, without coordinates (and a warning), in this version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import structlog

from runner.compression import Stage

__all__ = ["CoordinateSniffer", "Coordinates", "snapshot_coordinates"]

log = structlog.get_logger("dbb-backup")

# The header of a dump (comments, SET lines) is a few KiB; the GTID comment is followed only by the footer.
WINDOW: Final = 64 << 10
_POSITION = re.compile(rb"^-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);$", re.MULTILINE)
_GTID = re.compile(rb"^-- SET GLOBAL gtid_slave_pos='([0-9,-]*)';$", re.MULTILINE)


@dataclass(frozen=True)
class Coordinates:
    """The binlog position of a dump's snapshot: the first event to replay after it is at `file`:`position`.
    `gtid` is MariaDB's GTID position there (`gtid_binlog_pos` as of the snapshot); None where the server has none."""

    file: str | None
    position: int | None
    gtid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "position": self.position, "gtid": self.gtid}

    @classmethod
    def from_dict(cls, data: object) -> Coordinates | None:
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ValueError("binlog is not {file, position, gtid}")
        file, position, gtid = data.get("file"), data.get("position"), data.get("gtid")
        if (
            not (file is None or isinstance(file, str))
            or not (position is None or (isinstance(position, int) and not isinstance(position, bool)))
            or not (gtid is None or isinstance(gtid, str))
        ):
            raise ValueError("binlog is not {file: string, position: integer, gtid: string}")
        return cls(file, position, gtid)


def snapshot_coordinates(version: str, log_bin: str) -> bool:
    """Whether a dump of this server can record its snapshot's coordinates: binary logging on (`@@log_bin` 1), and
    a MariaDB server, whose consistent snapshot carries its binlog position (see above)."""
    if log_bin.strip() != "1":
        return False
    if "mariadb" not in version.lower():
        log.warning(
            "binary logging is on, but binlog coordinates are recorded for MariaDB servers only",
            server=version,
        )
        return False
    return True


class CoordinateSniffer:
    """A stage that passes the dump on unchanged and reads the coordinates off its head and tail."""

    def __init__(self, sink: Stage) -> None:
        self._sink = sink
        self._head = bytearray()
        self._tail = bytearray()

    def write(self, data: bytes) -> int:
        if len(self._head) < WINDOW:
            self._head += data[: WINDOW - len(self._head)]
        self._tail += data
        if len(self._tail) > 2 * WINDOW:
            del self._tail[: len(self._tail) - WINDOW]
        self._sink.write(data)
        return len(data)

    def close(self) -> None:
        self._sink.close()

    def coordinates(self) -> Coordinates | None:
        """The dump's coordinates; None if it has no position comment (a dump tool that did not write one)."""
        position = _POSITION.search(self._head)
        if position is None:
            return None
        gtids = _GTID.findall(self._tail)
        gtid = gtids[-1].decode() if gtids and gtids[-1] else None
        return Coordinates(position.group(1).decode("utf-8", errors="replace"), int(position.group(2)), gtid)
