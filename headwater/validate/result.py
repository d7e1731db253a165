"""What validation found, per table and for the task: plain data that the report renders
and writes as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from headwater.validate.keyrange import Key

DiffKind = Literal["missing", "extra", "changed"]


@dataclass
class RowDiff:
    """One differing row: `missing` in the target, `extra` in the target, or `changed`."""

    kind: DiffKind
    key: dict[str, str]  # key columns, canonical text
    columns: list[str] = field(default_factory=list)  # changed: the columns that differ
    native_key: Key = ()  # as read, to read the row again in a recheck


@dataclass
class TotalCheck:
    column: str
    source: Decimal | None
    target: Decimal | None

    @property
    def matches(self) -> bool:
        return self.source == self.target


@dataclass
class OrphanCheck:
    """Target rows whose foreign key (as the source declares it) points at no parent."""

    constraint: str
    child: str
    parent: str
    columns: list[str]
    orphans: int


@dataclass
class TableValidation:
    table: str
    target: str
    source_rows: int = 0
    target_rows: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    differences: int = 0  # rows found different (the total, beyond `max_rows`)
    rows: list[RowDiff] = field(default_factory=list)  # the first `max_rows` of them
    totals: list[TotalCheck] = field(default_factory=list)
    orphans: list[OrphanCheck] = field(default_factory=list)
    rechecked: int = 0  # rows read again after lag reached zero
    error: str | None = None  # why the table could not be compared
    seconds: float = 0.0

    @property
    def matches(self) -> bool:
        return (
            self.error is None
            and self.differences == 0
            and self.source_rows == self.target_rows
            and all(t.matches for t in self.totals)
            and not any(o.orphans for o in self.orphans)
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for row in data["rows"]:
            row.pop("native_key")
        for total in data["totals"]:
            for side in ("source", "target"):
                total[side] = None if total[side] is None else str(total[side])
        data["matches"] = self.matches
        return data


@dataclass
class TaskValidation:
    task: str
    source: str  # redacted URL
    target: str
    tables: list[TableValidation] = field(default_factory=list)
    recheck: str = ""  # what the CDC recheck did, for the report

    @property
    def matches(self) -> bool:
        return all(t.matches for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "validate",
            "task": self.task,
            "source": self.source,
            "target": self.target,
            "matches": self.matches,
            "recheck": self.recheck,
            "tables": [t.to_json() for t in self.tables],
        }
