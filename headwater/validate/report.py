"""A TaskValidation as a report: one line per table (rows, chunks, differences), the
differing rows with their columns, totals that disagree and orphaned foreign keys."""

from __future__ import annotations

from headwater.reports import Report, Section, Status
from headwater.validate.result import TableValidation, TaskValidation


def _table_status(t: TableValidation) -> Status:
    return "pass" if t.matches else "fail"


def _key_text(key: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def _tables(report: TaskValidation) -> Section:
    section = Section(
        "tables",
        [
            "table",
            "target",
            "source rows",
            "target rows",
            "chunks (differ)",
            "rows differ",
            "s",
            "note",
        ],
    )
    for t in report.tables:
        note = t.error or (f"rechecked {t.rechecked}" if t.rechecked else "")
        section.add(
            _table_status(t),
            t.table,
            t.target,
            f"{t.source_rows:,}",
            f"{t.target_rows:,}",
            f"{t.chunks} ({t.chunks_differing})",
            f"{t.differences:,}",
            f"{t.seconds:.1f}",
            note,
        )
    return section


def _rows(report: TaskValidation) -> Section:
    section = Section("differing rows", ["table", "key", "difference", "columns"])
    for t in report.tables:
        for row in t.rows:
            section.add("fail", t.table, _key_text(row.key), row.kind, ", ".join(row.columns))
        if t.differences > len(t.rows):
            section.add("fail", t.table, "...", f"{t.differences - len(t.rows):,} more", "")
    return section


def _totals(report: TaskValidation) -> Section:
    section = Section("numeric totals", ["table", "column", "source sum", "target sum"])
    for t in report.tables:
        for total in t.totals:
            section.add(
                "pass" if total.matches else "fail",
                t.table,
                total.column,
                total.source,
                total.target,
            )
    return section


def _orphans(report: TaskValidation) -> Section:
    section = Section(
        "referential integrity in the target", ["foreign key", "child", "parent", "orphans"]
    )
    for t in report.tables:
        for o in t.orphans:
            section.add(
                "fail" if o.orphans else "pass",
                f"{o.constraint} ({', '.join(o.columns)})",
                o.child,
                o.parent,
                f"{o.orphans:,}",
            )
    return section


def validation_report(result: TaskValidation) -> Report:
    differing = sum(1 for t in result.tables if not t.matches)
    summary = [
        f"source {result.source} -> target {result.target}",
        f"{len(result.tables)} table(s), {differing} with differences",
    ]
    if result.recheck:
        summary.append(result.recheck)
    return Report(
        "validate",
        f"validate {result.task}",
        "pass" if result.matches else "fail",
        summary,
        [_tables(result), _rows(result), _totals(result), _orphans(result)],
        result.to_json(),
    )
