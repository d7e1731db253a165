"""Fixtures for the MySQL/MariaDB source tests: a fresh MariaDB database per test (dropped
afterwards), a task reading it into the PostgreSQL target of `make_task`, and task runners
stopped after the test.

The server is the local stack's MariaDB unless HEADWATER_TEST_MARIADB names another URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from producers.mysql.connection import connect
from tests.helpers import started_runners
from tests.services import LOCAL, Endpoints


def mariadb_url(services: Endpoints) -> str:
    url = os.environ.get("HEADWATER_TEST_MARIADB") or services.mariadb or LOCAL.mariadb
    assert url is not None
    return url.rstrip("/")


@pytest.fixture
def mysql_db(services: Endpoints) -> Iterator[str]:
    """A fresh, empty MariaDB database; its URL. Dropped afterwards."""
    base = mariadb_url(services)
    name = f"t_my_{uuid.uuid4().hex[:8]}"
    with connect(base + "/") as admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    yield f"{base}/{name}"
    with connect(base + "/") as admin, admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mysql_task(make_task: Callable[..., TaskConfig], mysql_db: str) -> Callable[..., TaskConfig]:
    """Build a task from the test's MariaDB database into the PostgreSQL target."""
    db = mysql_db.rsplit("/", 1)[1]

    def build(**overrides: Any) -> TaskConfig:
        source = {"engine": "mysql", "url": mysql_db, **overrides.pop("source", {})}
        tables = overrides.pop("tables", {"include": [f"{db}.*"]})
        return make_task(source=source, tables=tables, **overrides)

    return build


@pytest.fixture
def runner() -> Iterator[Callable[[TaskConfig], TaskRunner]]:
    """Start a TaskRunner per call; all are stopped after the test."""
    yield from started_runners()


def execute(url: str, *statements: str, args: Any = None) -> None:
    """Run statements on the source, each in its own autocommitted transaction."""
    with connect(url) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, args)
