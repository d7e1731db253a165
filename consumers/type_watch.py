"""Notices a source column whose type changed between schema versions. A widening (a bigger
integer, a longer string, a decimal with more digits on both sides of the point) is applied
to the target by the sink; any other change (a narrowing above all) is a schema version the
sink cannot apply, so that table stops with a clear line and the other tables go on."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from consumers.errors import TargetError
from schemas.tables import TableId, TableSchema

# Ranks within a family of target types: a change to a higher rank of the same family loses
# nothing. Names as PostgreSQL, MariaDB/MySQL and SQLAlchemy's compilers write them.
_INTEGERS = {
    "tinyint": 0,
    "smallint": 1,
    "int2": 1,
    "mediumint": 2,
    "integer": 3,
    "int": 3,
    "int4": 3,
    "bigint": 4,
    "int8": 4,
}
_FLOATS = {"real": 0, "float4": 0, "float": 0, "double precision": 1, "float8": 1, "double": 1}
_TEXTS = {"tinytext": 0, "text": 1, "mediumtext": 2, "longtext": 3}
_SIZED = re.compile(r"^(character varying|varchar|character|char)\s*\((\d+)\)$")
_DECIMAL = re.compile(r"^(numeric|decimal)\s*\((\d+)\s*(?:,\s*(\d+))?\)$")


def _normal(type_text: str) -> str:
    return " ".join(type_text.lower().split())


def widens(old: str, new: str) -> bool:
    """Whether every value of target type `old` fits `new` unchanged."""
    old, new = _normal(old), _normal(new)
    if old == new:
        return True
    for family in (_INTEGERS, _FLOATS, _TEXTS):
        if old in family and new in family:
            return family[new] >= family[old]
    sized_old, sized_new = _SIZED.match(old), _SIZED.match(new)
    if sized_old:
        varying = sized_old.group(1) in ("character varying", "varchar")
        if new in _TEXTS or (varying and new == "character varying"):
            return True  # unbounded text holds any string
        if sized_new and sized_new.group(1) == sized_old.group(1):
            return int(sized_new.group(2)) >= int(sized_old.group(2))
        return False
    dec_old, dec_new = _DECIMAL.match(old), _DECIMAL.match(new)
    if dec_old:
        if new in ("numeric", "decimal") and dec_old.group(1) == "numeric":
            return True  # PostgreSQL's unconstrained numeric holds any scale
        if dec_new and dec_new.group(1) == dec_old.group(1):
            precision, scale = int(dec_old.group(2)), int(dec_old.group(3) or 0)
            precision2, scale2 = int(dec_new.group(2)), int(dec_new.group(3) or 0)
            return scale2 >= scale and precision2 - scale2 >= precision - scale
    return False


@dataclass(frozen=True)
class Widened:
    """A target column whose type the sink widens: `column` from `old` to `new`."""

    column: str
    old: str
    new: str


class TypeWatch:
    """Remembers each target column's type as this sink last mapped it."""

    def __init__(self, task: str) -> None:
        self.task = task
        self._types: dict[tuple[TableId, str], str] = {}

    def check(
        self, target: TableId, schema: TableSchema, type_of: Callable[[str], str]
    ) -> list[Widened]:
        """The columns of `schema` whose target type widened since the last schema version;
        raise TargetError if one changed in any other way. Call `accept` once applied."""
        widened = []
        for name in schema.column_names:
            wanted = type_of(name)
            known = self._types.setdefault((target, name), wanted)
            if known == wanted:
                continue
            if not widens(known, wanted):
                raise TargetError(
                    f"task {self.task}: column {name} of {schema.table} changed type at the "
                    f"source ({known} -> {wanted}), which the sink does not apply; alter "
                    f"{target}.{name} to {wanted} and restart the sink",
                    task=self.task,
                    table=str(target),
                )
            widened.append(Widened(name, known, wanted))
        return widened

    def accept(self, target: TableId, widened: list[Widened]) -> None:
        """Remember the widened types (the target columns were altered)."""
        for change in widened:
            self._types[(target, change.column)] = change.new
