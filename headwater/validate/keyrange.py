"""Primary-key ranges: the unit validation checksums and bisects. A range runs from an
exclusive lower key to an inclusive upper key (either end open), written as a predicate each
engine can answer from the primary-key index; key values read on one side are converted so
the other side's driver binds them as its column type."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys in (low, high]; None is open."""

    low: Key | None = None
    high: Key | None = None

    def split(self, points: Sequence[Key]) -> list[KeyRange]:
        """The range cut at `points` (ascending keys inside it)."""
        bounds: list[Key | None] = [self.low, *points, self.high]
        return [KeyRange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def bind_value(value: Any, engine: str) -> Any:
    """A key value read from either engine, as the driver of `engine` should bind it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if engine == "mysql":
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)  # DATETIME holds UTC wall time
        if isinstance(value, bool):
            return int(value)
    return value


def _compare(engine: str, keys: Sequence[str], op: str, names: Sequence[str]) -> str:
    """`keys op values` in row order; MariaDB plans a range scan only for the expanded OR
    form, PostgreSQL for the row comparison."""
    if len(keys) == 1:
        return f"{keys[0]} {op} :{names[0]}"
    if engine == "postgres":
        return f"({', '.join(keys)}) {op} ({', '.join(':' + n for n in names)})"
    strict = op[0]  # '>' or '<'
    terms = []
    for i in range(len(keys)):
        equal = [f"{keys[j]} = :{names[j]}" for j in range(i)]
        last = op if i == len(keys) - 1 else strict
        terms.append("(" + " AND ".join([*equal, f"{keys[i]} {last} :{names[i]}"]) + ")")
    return "(" + " OR ".join(terms) + ")"


def predicate(engine: str, keys: Sequence[str], rng: KeyRange) -> tuple[str, dict[str, Any]]:
    """SQL (for sqlalchemy.text) selecting the rows of `rng`, and its parameters; `keys`
    are the quoted key columns."""
    parts, params = [], {}
    for end, op, values in (("lo", ">", rng.low), ("hi", "<=", rng.high)):
        if values is None:
            continue
        names = [f"{end}{i}" for i in range(len(keys))]
        parts.append(_compare(engine, keys, op, names))
        params.update({n: bind_value(v, engine) for n, v in zip(names, values, strict=True)})
    return (" AND ".join(parts) or "1=1"), params


def key_list(engine: str, keys: Sequence[str], values: Sequence[Key]) -> tuple[str, dict[str, Any]]:
    """SQL selecting the rows whose keys are among `values`."""
    params: dict[str, Any] = {}
    tuples = []
    for i, key in enumerate(values):
        names = [f"k{i}_{j}" for j in range(len(keys))]
        params.update({n: bind_value(v, engine) for n, v in zip(names, key, strict=True)})
        tuples.append("(" + ", ".join(":" + n for n in names) + ")")
    if len(keys) == 1:
        return f"{keys[0]} IN ({', '.join(t[1:-1] for t in tuples)})", params
    return f"({', '.join(keys)}) IN ({', '.join(tuples)})", params
