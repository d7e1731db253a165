"""Fixtures shared by the integration and end-to-end tests: the services, started once per
session, and fresh databases and task configurations per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from headwater.config import TaskConfig
from tests.services import Endpoints, endpoints


@pytest.fixture(scope="session")
def services() -> Iterator[Endpoints]:
    with endpoints() as found:
        yield found


def _swap_db(url: str, db: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + db


@pytest.fixture
def pg_databases(services: Endpoints) -> Iterator[tuple[str, str]]:
    """A fresh, empty source and target database; dropped (with their slots) afterwards."""
    import psycopg
    from psycopg import sql

    suffix = uuid.uuid4().hex[:8]
    names = (f"t_src_{suffix}", f"t_dst_{suffix}")
    with psycopg.connect(services.postgres, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _swap_db(services.postgres, names[0]), _swap_db(services.postgres, names[1])
    with psycopg.connect(services.postgres, autocommit=True) as admin:
        # A producer a failed test left running holds its slot: end it, then drop the slot.
        admin.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE database = %s AND active",
            (names[0],),
        )
        admin.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s AND NOT active",
            (names[0],),
        )
        for name in names:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def make_task(services: Endpoints, pg_databases: tuple[str, str]) -> Callable[..., TaskConfig]:
    """Build a task on the test databases with a unique name and topic prefix."""
    source, target = pg_databases

    def build(**overrides: Any) -> TaskConfig:
        name = f"t{uuid.uuid4().hex[:10]}"
        data: dict[str, Any] = {
            "name": name,
            "source": {"url": source},
            "target": {"url": target.replace("postgresql://", "postgresql+psycopg://")},
            "kafka": {"bootstrap_servers": services.kafka},
            "registry": {"url": services.registry},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return TaskConfig.model_validate(data)

    return build


@pytest.fixture(scope="session")
def mariadb_root(services: Endpoints) -> str:
    """A root URL (PyMySQL driver) of the test MariaDB, started with the local stack if the
    services came without one."""
    if services.mariadb:
        return services.mariadb.replace("mysql://", "mysql+pymysql://")
    from headwater.stack import manager

    manager.up(["mariadb"], echo=lambda _: None)
    return "mysql+pymysql://root@127.0.0.1:3306/"
