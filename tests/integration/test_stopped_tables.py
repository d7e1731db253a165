"""The record of stopped tables `headwater status` reads (consumers/stopped_tables.py), kept
in a real PostgreSQL, MariaDB and SQLite target: a table stopped shows with its reason, a
table applied again goes away, and `headwater cleanup` (forget_offsets) forgets them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumers.offsets import forget_offsets
from consumers.sink import target_sink
from consumers.stopped_tables import load_stopped
from headwater.config import TaskConfig
from tests.sink_support import mariadb_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def task(
    request: pytest.FixtureRequest, make_task: Callable[..., TaskConfig], tmp_path: Path
) -> Iterator[TaskConfig]:
    if request.param == "postgres":
        yield make_task()
    elif request.param == "sqlite":
        yield make_task(target={"engine": "sqlite", "url": f"sqlite:///{tmp_path / 't.db'}"})
    else:
        for url in mariadb_database(request.getfixturevalue("mariadb_root")):
            yield make_task(target={"engine": "mysql", "url": url})


def test_stopped_tables_are_recorded_until_applied_again(task: TaskConfig) -> None:
    assert load_stopped(task) == []
    sink = target_sink(task)
    try:
        sink.note_stopped({"public.a": "column x changed type", "public.b": "no such table"})
        sink.note_stopped({"public.a": "column x changed type"}, ["public.a", "public.c"])
        assert {(t.table, t.reason) for t in load_stopped(task)} == {
            ("public.a", "column x changed type"),
            ("public.b", "no such table"),
        }
        sink.note_stopped({}, ["public.b"])  # applied again: no longer stopped
        assert [t.table for t in load_stopped(task)] == ["public.a"]
    finally:
        sink.close()
    forget_offsets(task)
    assert load_stopped(task) == []
