"""Notices a source column whose type changed between schema versions. Sinks widen a target
only by adding columns; a changed type (a narrowing above all) is a schema version the sink
cannot apply, so that table stops with a clear line and the other tables go on."""

from __future__ import annotations

from collections.abc import Callable

from consumers.errors import TargetError
from schemas.tables import TableId, TableSchema


class TypeWatch:
    """Remembers each target column's type as this sink first mapped it."""

    def __init__(self, task: str) -> None:
        self.task = task
        self._types: dict[tuple[TableId, str], str] = {}

    def check(self, target: TableId, schema: TableSchema, type_of: Callable[[str], str]) -> None:
        """Raise TargetError if a column of `schema` maps to another type than before."""
        for name in schema.column_names:
            wanted = type_of(name)
            known = self._types.setdefault((target, name), wanted)
            if known != wanted:
                raise TargetError(
                    f"task {self.task}: column {name} of {schema.table} changed type at the "
                    f"source ({known} -> {wanted}), which the sink does not apply; alter "
                    f"{target}.{name} to {wanted} and restart the sink",
                    task=self.task,
                    table=str(target),
                )
