"""`headwater stack` commands: bring the local stack up, down, and show its state.

Mounted by headwater/cli.py as the `stack` sub-command group. A StackError is a condition
the user can fix, so it prints as one red line (exit code 1), never as a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.stack import manager
from headwater.stack.service import ServiceStatus, StackError

stack_app = typer.Typer(
    help="Run the local stack (Kafka, schema registry, PostgreSQL, MariaDB) on 127.0.0.1.",
    no_args_is_help=True,
)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

ServicesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Services to act on: kafka, registry, postgres, mariadb (default: all).",
        show_default=False,
    ),
]

_STATE_STYLE = {"up": "green", "down": "yellow", "not-installed": "red"}


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn a StackError into a red message and exit code 1."""
    try:
        yield
    except StackError as error:
        _err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(code=1) from None


def _echo(line: str) -> None:
    """Progress lines of `up`/`down`, printed as plain text (no markup interpretation)."""
    _out.print(line, markup=False)


def _table(statuses: list[ServiceStatus]) -> Table:
    """The service/state/address table of `up` and `status`."""
    table = Table("service", "state", "address")
    for status in statuses:
        style = _STATE_STYLE.get(status.state, "")
        table.add_row(
            status.name, f"[{style}]{status.state}[/]" if style else status.state, status.address
        )
    return table


@stack_app.command()
def up(services: ServicesArg = None) -> None:
    """Install what is missing and start what is down; running services stay as they are."""
    with _user_errors():
        statuses = manager.up(services, echo=_echo)
    _out.print(_table(statuses))


@stack_app.command()
def down(services: ServicesArg = None) -> None:
    """Stop services; their data is kept for the next `up`."""
    with _user_errors():
        manager.down(services, echo=_echo)


@stack_app.command()
def status(
    services: ServicesArg = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list with connection URLs.")
    ] = False,
) -> None:
    """Show state and address of each service (with --json, also its connection URLs)."""
    with _user_errors():
        statuses = manager.status(services)
    if as_json:
        # Plain print: rich would wrap long URLs and add colour codes to machine output.
        print(json.dumps([asdict(status) for status in statuses], indent=2))
    else:
        _out.print(_table(statuses))
