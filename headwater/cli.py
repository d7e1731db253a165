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
    help="headwater: full load and change data capture from PostgreSQL through Kafka.",
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


def _user_errors() -> tuple[type[BaseException], ...]:
    from consumers.errors import SinkError
    from headwater.runner import StageFailed
    from headwater.stack.service import StackError
    from producers.errors import DeliveryError, SourceError
    from schemas.registry import RegistryError

    return (
        ConfigError,
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
