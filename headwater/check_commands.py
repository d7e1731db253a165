"""The bodies of `headwater validate`, `assess` and `convert`: run the check, print its
report, write the JSON and HTML files asked for, and return the exit status (0 when nothing
failed or differs, 1 otherwise). Errors a user can cause propagate to cli.main."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import DBAPIError

from headwater.config import TaskConfig
from headwater.reports import Report, render, write_files
from producers.errors import SourceError


def split_names(values: Sequence[str] | None) -> list[str]:
    """`--tables a,b --tables c` as [a, b, c]."""
    return [n.strip() for v in values or () for n in v.split(",") if n.strip()]


@contextmanager
def database_errors(command: str) -> Iterator[None]:
    """A database refusing a check's query (a privilege, a lock timeout) as one line."""
    try:
        yield
    except DBAPIError as exc:
        first = " ".join(str(exc.orig).split())[:300]
        raise SourceError(
            f"{command}: the database refused a query: {first}; check the user's privileges "
            "on the tables (or run with --debug for the statement)"
        ) from None


def _finish(
    report: Report, console: Console, json_path: Path | None, html_path: Path | None
) -> int:
    console.print(render(report))
    write_files(report, json_path, html_path)
    return 1 if report.verdict == "fail" else 0


def run_validate(
    task: TaskConfig,
    tables: Sequence[str],
    sums: Sequence[str],
    chunk_rows: int,
    recheck_timeout: float,
    json_path: Path | None,
    html_path: Path | None,
    console: Console,
    progress_console: Console,
) -> int:
    from headwater.validate.report import validation_report
    from headwater.validate.run import ValidateOptions, validate_task
    from headwater.validate.table_check import ChunkPlan

    options = ValidateOptions(tables, sums, ChunkPlan(chunk_rows=chunk_rows), recheck_timeout)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=progress_console, transient=True) as bar:
        ids: dict[str, int] = {}

        def advance(table: str, done: int, total: int) -> None:
            if table not in ids:
                ids[table] = int(bar.add_task(f"chunks of {table}", total=total))
            bar.update(ids[table], completed=done)  # type: ignore[arg-type]

        with database_errors("validate"):
            result = validate_task(task, options, advance)
    return _finish(validation_report(result), console, json_path, html_path)


def run_assess(
    task: TaskConfig, json_path: Path | None, html_path: Path | None, console: Console
) -> int:
    from headwater.assess.report import assessment_report
    from headwater.assess.run import assess_task

    with database_errors("assess"):
        result = assess_task(task)
    return _finish(assessment_report(result), console, json_path, html_path)


def run_convert(
    task: TaskConfig,
    apply: bool,
    post_load: bool,
    sql_path: Path | None,
    json_path: Path | None,
    html_path: Path | None,
    console: Console,
) -> int:
    from headwater.convert.report import conversion_report
    from headwater.convert.run import apply_plan, plan_task

    with database_errors("convert"):
        plan = plan_task(task)
    if sql_path is not None:
        statements = [*plan.create_statements, *plan.post_load_statements]
        sql_path.write_text("".join(f"{s};\n\n" for s in statements))
    if apply:
        apply_plan(task, plan, post_load)
    return _finish(conversion_report(plan), console, json_path, html_path)
