"""A position in the binlog: file and offset, and the GTID state after the same transaction
(MariaDB `domain-server-seq` list or MySQL `uuid:interval` set). Saved in the task's
progress record only after Kafka acknowledged every event before it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
