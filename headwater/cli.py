"""The `headwater` command. Each command is small; `main` is the one place that maps the
errors a user can cause to a one-line message and a non-zero exit (`--debug` shows the
traceback instead)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from headwater.config import ConfigError, TaskConfig, load_task
from headwater.stack.cli import stack_app

app = typer.Typer(
    help=(
        "headwater: full load and change data capture from PostgreSQL or MySQL/MariaDB "
        "through Kafka into PostgreSQL, MySQL/MariaDB or SQLite."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

TaskFile = Annotated[Path, typer.Argument(help="The task's YAML file.", show_default=False)]


def _task(path: Path) -> TaskConfig:
    return load_task(path)


@app.command()
def run(
    task_file: TaskFile,
    until_caught_up: Annotated[
        bool, typer.Option(help="Exit 0 once the full load is done and lag is zero.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="With --until-caught-up: give up after S s.")
    ] = 3600,
    quiet: Annotated[bool, typer.Option(help="No live progress display.")] = False,
) -> None:
    """Run a task: full load and/or CDC from source through Kafka into the target.

    Ctrl-C or SIGTERM stops it cleanly; running it again resumes where it stopped.
    """
    from headwater.run_command import run_task

    raise typer.Exit(run_task(_task(task_file), until_caught_up, timeout, quiet, out))


@app.command()
def status(
    task_file: TaskFile,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a task's full-load progress, events streamed, lag and latency."""
    from headwater.display import render
    from headwater.status import collect_status

    current = collect_status(_task(task_file))
    if as_json:
        print(json.dumps(current.to_json(), indent=2, default=str))
    else:
        out.print(render(current))


@app.command()
def snapshot(
    task_file: TaskFile,
    table: Annotated[
        list[str], typer.Option("--table", help="schema.table to snapshot; repeatable.")
    ],
) -> None:
    """Snapshot tables again while the task streams, without a gap or a stale overwrite."""
    from headwater.resnapshot import request_snapshot

    task = _task(task_file)
    for requested in request_snapshot(task, table):
        out.print(f"requested an incremental snapshot of {requested} for task {task.name}")


@app.command()
def cleanup(
    task_file: TaskFile,
    topics: Annotated[bool, typer.Option(help="Also delete the task's Kafka topics.")] = False,
    target: Annotated[
        bool, typer.Option(help="Also forget the offsets the sink stored in the target.")
    ] = False,
) -> None:
    """Drop the task's replication slot and publication and forget its progress."""
    from headwater.cleanup import cleanup_task

    for line in cleanup_task(_task(task_file), topics=topics, target=target):
        out.print(line)


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="Customers in the sample database.")] = 2000,
    changes: Annotated[int, typer.Option(help="Changes written while the task runs.")] = 600,
) -> None:
    """Start the local stack and run a demo migration, PostgreSQL to PostgreSQL."""
    from headwater.demo import run_demo

    raise typer.Exit(run_demo(rows=rows, changes=changes, console=out))


JsonReport = Annotated[
    Path | None, typer.Option("--json", help="Also write the report as JSON to FILE.")
]
HtmlReport = Annotated[
    Path | None, typer.Option("--html", help="Also write the report as an HTML page to FILE.")
]
TableNames = Annotated[
    list[str] | None, typer.Option("--tables", help="Only these tables (comma-separated).")
]


@app.command()
def validate(
    task_file: TaskFile,
    tables: TableNames = None,
    sums: Annotated[
        list[str] | None,
        typer.Option("--sum", help="Columns to total (col or table.col); default: numeric."),
    ] = None,
    chunk_rows: Annotated[int, typer.Option(help="Rows per checksummed chunk.")] = 20_000,
    recheck_timeout: Annotated[
        float, typer.Option(help="Under CDC: wait up to S s for lag 0 before the recheck.")
    ] = 120,
    json_file: JsonReport = None,
    html_file: HtmlReport = None,
) -> None:
    """Compare source and target: row counts, checksums narrowed to the differing rows, numeric totals and foreign keys in the target. Exit 1 when anything differs."""  # noqa: E501  (typer keeps a docstring's line breaks in --help)
    from headwater.check_commands import run_validate, split_names

    code = run_validate(
        _task(task_file),
        split_names(tables),
        split_names(sums),
        chunk_rows,
        recheck_timeout,
        json_file,
        html_file,
        out,
        err,
    )
    raise typer.Exit(code)


@app.command()
def assess(task_file: TaskFile, json_file: JsonReport = None, html_file: HtmlReport = None) -> None:
    """Premigration assessment of source, tables, target and Kafka: pass, warn or fail per check. Exit 0 when nothing fails."""  # noqa: E501
    from headwater.check_commands import run_assess

    raise typer.Exit(run_assess(_task(task_file), json_file, html_file, out))


@app.command()
def convert(
    task_file: TaskFile,
    apply: Annotated[bool, typer.Option(help="Run the table DDL on the target.")] = False,
    post_load: Annotated[
        bool, typer.Option(help="With --apply: run the indexes and foreign keys instead.")
    ] = False,
    sql_file: Annotated[
        Path | None, typer.Option("--sql", help="Also write the DDL to FILE.")
    ] = None,
    json_file: JsonReport = None,
    html_file: HtmlReport = None,
) -> None:
    """Target DDL for the selected tables, and what needs a person. Foreign keys and secondary indexes come after the full load: `--apply`, load, `--apply --post-load`."""  # noqa: E501
    from headwater.check_commands import run_convert

    if post_load and not apply:
        raise ConfigError(
            "--post-load goes with --apply: headwater convert TASK --apply --post-load"
        )
    code = run_convert(_task(task_file), apply, post_load, sql_file, json_file, html_file, out)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from consumers.errors import SinkError
    from headwater.runner import StageFailed
    from headwater.stack.service import StackError
    from producers.errors import DeliveryError, SourceError
    from schemas.registry import RegistryError
    from transforms.errors import TableMappingError

    return (
        ConfigError,
        TableMappingError,
        SourceError,
        DeliveryError,
        RegistryError,
        StackError,
        StageFailed,
        SinkError,
        TimeoutError,
    )


def main() -> None:
    """Console entry point."""
    debug = "--debug" in sys.argv or os.environ.get("HEADWATER_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except _user_errors() as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
