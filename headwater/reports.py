"""The report every check command (assess, convert, validate) prints and writes: a verdict,
summary lines and tables of rows with a status each; rendered with rich for the terminal,
written as JSON (the command's own data) and as one self-contained HTML page (inline CSS, no
scripts, every value escaped). Reports carry redacted URLs only, never a password."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

Status = Literal["pass", "warn", "fail", "info"]

_STYLE: dict[str, str] = {"pass": "green", "warn": "yellow", "fail": "red", "info": "cyan"}


@dataclass
class Section:
    """One table of the report; `statuses[i]` colours row i."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)

    def add(self, status: Status, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])
        self.statuses.append(status)


@dataclass
class Report:
    command: str
    title: str
    verdict: Status
    summary: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # written as the JSON report


def worst(statuses: list[Status]) -> Status:
    """The verdict of a set of statuses: fail over warn over pass."""
    for level in ("fail", "warn"):
        if level in statuses:
            return level
    return "pass"


def render(report: Report) -> RenderableType:
    """The report for a terminal."""
    head = Text(f"{report.title}: ")
    head.append(report.verdict.upper(), style=f"bold {_STYLE[report.verdict]}")
    parts: list[RenderableType] = [head, *(Text(line) for line in report.summary)]
    for section in report.sections:
        if not section.rows:
            continue
        table = Table(title=section.title, title_justify="left")
        for i, name in enumerate(section.columns):
            table.add_column(name, overflow="fold", no_wrap=i == 0)
        for status, row in zip(section.statuses, section.rows, strict=True):
            table.add_row(*row, style=_STYLE[status] if status in ("warn", "fail") else None)
        parts.append(table)
    return Group(*parts)


def write_json(report: Report, path: Path) -> None:
    data = {"verdict": report.verdict, **report.data}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:0 0 1.5rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
td{white-space:pre-wrap;font-family:ui-monospace,monospace}
th{background:#f0f0f0}.pass{color:#176f2c}.warn{background:#fff6d6}.fail{background:#fde2e2}
.verdict{font-weight:bold;padding:.1rem .5rem;border-radius:.25rem}
"""


def to_html(report: Report) -> str:
    """The report as one HTML page that needs nothing else."""
    esc = html.escape
    body = [
        f"<h1>{esc(report.title)} <span class='verdict {report.verdict}'>"
        f"{esc(report.verdict.upper())}</span></h1>"
    ]
    body += [f"<p>{esc(line)}</p>" for line in report.summary]
    for section in report.sections:
        if not section.rows:
            continue
        body.append(f"<h2>{esc(section.title)}</h2><table><tr>")
        body += [f"<th>{esc(c)}</th>" for c in section.columns]
        body.append("</tr>")
        for status, row in zip(section.statuses, section.rows, strict=True):
            cells = "".join(f"<td>{esc(c)}</td>" for c in row)
            body.append(f"<tr class='{status}'>{cells}</tr>")
        body.append("</table>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_html(report: Report, path: Path) -> None:
    path.write_text(to_html(report))


def write_files(report: Report, json_path: Path | None, html_path: Path | None) -> None:
    if json_path is not None:
        write_json(report, json_path)
    if html_path is not None:
        write_html(report, html_path)
