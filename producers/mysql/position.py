"""A position in the binlog: file and offset, and the GTID state after the same transaction
(MariaDB `domain-server-seq` list or MySQL `uuid:interval` set). Saved in the task's
progress record only after Kafka acknowledged every event before it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from producers.resume_dedupe import Position
from schemas.envelope import SourceInfo

_FILE_NUMBER = re.compile(r"\.(\d+)$")


@dataclass(frozen=True, slots=True)
class BinlogPosition:
    """Where reading resumes: the end of the last transaction fully acknowledged."""

    file: str
    pos: int
    gtid: str = ""

    def describe(self) -> str:
        text = f"{self.file}:{self.pos}"
        return f"{text} gtid {self.gtid}" if self.gtid else text

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "pos": self.pos, "gtid": self.gtid}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinlogPosition | None:
        if not data or not data.get("file"):
            return None
        return cls(str(data["file"]), int(data["pos"]), str(data.get("gtid") or ""))

    @property
    def ordinal(self) -> int:
        """One number that grows along the binlog (file sequence, then offset), so progress
        compares like a PostgreSQL LSN."""
        return file_number(self.file) << 40 | self.pos


def file_number(name: str) -> int:
    """The sequence number of a binlog file (`mariadb-bin.000004` -> 4)."""
    found = _FILE_NUMBER.search(name)
    return int(found.group(1)) if found else 0


def stream_position(source: SourceInfo) -> Position | None:
    """A streamed change's place in the binlog: (file number, end position of its binlog
    event, `seq` within that event); None for snapshot rows and for records written before
    `seq` was. Comparable only within one server's binlog (a failover to another server
    renumbers it: see docs/keyless-tables.md, "Resuming after a crash")."""
    if source.snapshot != "false" or source.seq is None or not source.file or source.pos is None:
        return None
    return (file_number(source.file), source.pos, source.seq)
