"""The two GTID forms, parsed, formatted and compared without a server: MySQL's executed
sets (`uuid:1-5:7-9,uuid2:1-3`, and from 8.3 tagged ones, `uuid:1-5:tag:1-2`) and MariaDB's
GTID positions (`domain-server-seq`, the last GTID of each replication domain).

Pure: the binlog reader records each transaction's GTID here, the saved position is the
formatted state, and containment says whether a position already covers a transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}$")

Interval = tuple[int, int]  # first and last transaction number, both included


class GtidFormatError(ValueError):
    """A GTID or GTID set that does not parse."""


def _interval(text: str) -> Interval:
    first, _, last = text.partition("-")
    try:
        start, end = int(first), int(last or first)
    except ValueError:
        raise GtidFormatError(f"bad GTID interval {text!r}") from None
    if start < 1 or end < start:
        raise GtidFormatError(f"bad GTID interval {text!r}")
    return start, end


def _merged(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


@dataclass
class MysqlGtidSet:
    """A MySQL GTID set: per source uuid and tag ("" for none), transaction intervals."""

    intervals: dict[tuple[str, str], list[Interval]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MysqlGtidSet:
        found = cls()
        for part in filter(None, (p.strip() for p in text.replace("\n", "").split(","))):
            uuid, *rest = part.split(":")
            if not rest:
                raise GtidFormatError(f"GTID set part {part!r} has no interval")
            tag = ""
            for item in rest:
                if _TAG.match(item):
                    tag = item.lower()  # MySQL stores tags in lower case
                    continue
                found._add((uuid.lower(), tag), _interval(item))
        return found

    def _add(self, source: tuple[str, str], interval: Interval) -> None:
        self.intervals[source] = _merged([*self.intervals.get(source, []), interval])

    def add(self, gtid: str) -> None:
        """Add one transaction's GTID (`uuid:n` or `uuid:tag:n`)."""
        uuid, *middle, number = gtid.strip().split(":")
        if len(middle) > 1 or (middle and not _TAG.match(middle[0])):
            raise GtidFormatError(f"bad GTID {gtid!r}")
        start, end = _interval(number)
        if start != end:
            raise GtidFormatError(f"{gtid!r} is a set, not one GTID")
        self._add((uuid.lower(), middle[0].lower() if middle else ""), (start, end))

    def contains(self, gtid: str) -> bool:
        probe = MysqlGtidSet()
        probe.add(gtid)
        return self.covers(probe)

    def covers(self, other: MysqlGtidSet) -> bool:
        """Whether every transaction of `other` is in this set."""
        for source, wanted in other.intervals.items():
            have = self.intervals.get(source, [])
            for start, end in wanted:
                if not any(a <= start and end <= b for a, b in have):
                    return False
        return True

    def __str__(self) -> str:
        parts = []
        for uuid in sorted({u for u, _ in self.intervals}):
            text = uuid
            for (u, tag), intervals in sorted(self.intervals.items()):
                if u != uuid:
                    continue
                text += f":{tag}" if tag else ""
                text += "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in intervals)
            parts.append(text)
        return ",".join(parts)


def _mariadb_gtid(text: str) -> tuple[int, int, int]:
    try:
        domain, server, seq = (int(x) for x in text.strip().split("-"))
    except ValueError:
        raise GtidFormatError(f"bad MariaDB GTID {text!r} (domain-server-sequence)") from None
    return domain, server, seq


@dataclass
class MariadbGtidPos:
    """A MariaDB GTID position: the last GTID applied in each replication domain."""

    last: dict[int, tuple[int, int]] = field(default_factory=dict)  # domain -> server, seq

    @classmethod
    def parse(cls, text: str) -> MariadbGtidPos:
        found = cls()
        for part in filter(None, (p.strip() for p in text.split(","))):
            found.add(part)
        return found

    def add(self, gtid: str) -> None:
        domain, server, seq = _mariadb_gtid(gtid)
        self.last[domain] = (server, seq)

    def contains(self, gtid: str) -> bool:
        """Whether the position is at or past `gtid` in its domain (sequence numbers grow
        within a domain whatever server wrote them)."""
        domain, _server, seq = _mariadb_gtid(gtid)
        return domain in self.last and self.last[domain][1] >= seq

    def __str__(self) -> str:
        return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(self.last.items()))
