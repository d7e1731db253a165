"""`headwater validate` for a task: every selected table (or those of `--tables`) compared
row by row through checksums, its numeric totals and, in the target, the foreign keys the
source declares; then differing rows rechecked once a CDC task's lag allows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from headwater.config import TaskConfig
from headwater.databases import Endpoint, endpoints, source_schemas, target_where
from headwater.inventory.foreign_keys import foreign_keys
from headwater.validate.integrity import compare_totals, count_orphans, total_columns
from headwater.validate.recheck import recheck_table, wait_until_applied
from headwater.validate.result import RowDiff, TableValidation, TaskValidation
from headwater.validate.table_check import ChunkPlan, compare_table
from headwater.validate.table_side import TableSide
from schemas.tables import TableId, TableSchema

Progress = Callable[[str, int, int], None]  # (table, chunks done, chunks in all)


@dataclass(frozen=True)
class ValidateOptions:
    tables: Sequence[str] = ()
    sums: Sequence[str] = ()
    plan: ChunkPlan = field(default_factory=ChunkPlan)
    recheck_timeout_s: float = 120.0


def _where_text(where: tuple[str | None, str]) -> str:
    return ".".join(p for p in where if p)


def _validate_table(
    task: TaskConfig,
    ends: tuple[Endpoint, Endpoint],
    schema: TableSchema,
    options: ValidateOptions,
    progress: Progress | None,
) -> tuple[TableValidation, list[RowDiff], tuple[TableSide, TableSide]]:
    src_end, dst_end = ends
    where = target_where(task, schema.table)
    result = TableValidation(str(schema.table), _where_text(where))
    exact = src_end.kind == dst_end.kind
    src = TableSide(src_end, (schema.table.schema, schema.table.name), schema, exact)
    dst = TableSide(dst_end, where, schema, exact)
    started = time.monotonic()
    beyond: list[RowDiff] = []
    with src_end.engine.connect() as sconn, dst_end.engine.connect() as dconn:
        if not schema.primary_key:
            result.error = "no primary key: rows cannot be compared by key; add one"
        elif not dst.exists(dconn):
            result.error = (
                f"target table {result.target} does not exist: run the task or "
                "`headwater convert --apply` first"
            )
        else:
            report = (lambda d, n: progress(str(schema.table), d, n)) if progress else None
            beyond = compare_table(src, dst, sconn, dconn, result, options.plan, report)
            _totals(src, dst, result, options)
    result.seconds = round(time.monotonic() - started, 3)
    return result, beyond, (src, dst)


def _totals(
    src: TableSide, dst: TableSide, result: TableValidation, options: ValidateOptions
) -> None:
    columns = total_columns(src.schema, options.sums)
    with src.endpoint.engine.connect() as sconn, dst.endpoint.engine.connect() as dconn:
        result.totals = compare_totals(src, dst, sconn, dconn, columns)


def _orphans(
    task: TaskConfig,
    ends: tuple[Endpoint, Endpoint],
    selected: set[TableId],
    result: TableValidation,
    table: TableId,
) -> None:
    src_end, dst_end = ends
    with src_end.engine.connect() as sconn:
        fks = [fk for fk in foreign_keys(sconn, src_end.kind, table) if fk.parent in selected]
    result.orphans = []
    with dst_end.engine.connect() as dconn:
        for fk in fks:
            child, parent = target_where(task, fk.table), target_where(task, fk.parent)
            result.orphans.append(count_orphans(dst_end, dconn, fk, child, parent))


def validate_task(
    task: TaskConfig, options: ValidateOptions = ValidateOptions(), progress: Progress | None = None
) -> TaskValidation:
    """Validate the task's tables; never raises for a difference, only for bad input."""
    schemas = source_schemas(task, list(options.tables) or None)
    with endpoints(task) as ends:
        report = TaskValidation(task.name, ends[0].url, ends[1].url)
        selected = {s.table for s in source_schemas(task)}
        pending = []
        for schema in schemas:
            result, beyond, sides = _validate_table(task, ends, schema, options, progress)
            report.tables.append(result)
            if result.error is None:
                _orphans(task, ends, selected, result, schema.table)
            if result.error is None and not result.matches:
                pending.append((result, beyond, sides))
        if pending:
            why = wait_until_applied(task, options.recheck_timeout_s)
            report.recheck = why or "differing rows rechecked after the task caught up"
            if why is None:
                # Rows, counts, totals and orphans may all have been in flight: again.
                for result, beyond, (src, dst) in pending:
                    recheck_table(src, dst, result, beyond, options.plan.max_rows)
                    _totals(src, dst, result, options)
                    _orphans(task, ends, selected, result, src.schema.table)
        return report
