"""One assessment result: what was checked, its status, what was found and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from headwater.reports import Status


@dataclass(frozen=True)
class Finding:
    area: str  # source, table, target, kafka
    subject: str  # what was checked: a setting, a table, a column
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def passed(area: str, subject: str, detail: str) -> Finding:
    return Finding(area, subject, "pass", detail)


def warned(area: str, subject: str, detail: str, fix: str = "") -> Finding:
    return Finding(area, subject, "warn", detail, fix)


def failed(area: str, subject: str, detail: str, fix: str) -> Finding:
    return Finding(area, subject, "fail", detail, fix)


def one_line(exc: BaseException) -> str:
    """An exception as one short line for a report."""
    return " ".join(str(exc).split())[:240] or type(exc).__name__
