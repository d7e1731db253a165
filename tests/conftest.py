"""Fixtures shared by the integration and end-to-end tests: the services, started once per
session, and fresh databases and task configurations per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from headwater.config import TaskConfig
from tests.services import Endpoints, endpoints

# Topic prefixes of the tasks this session built: their topics are deleted at its end, so
# a developer's Kafka does not pile up thousands of test partitions run after run (one
# machine reached 6,500 and its broker no longer started within `stack up`'s timeout).
_TASK_PREFIXES: set[str] = set()


@pytest.fixture(scope="session")
def services() -> Iterator[Endpoints]:
    with endpoints() as found:
        yield found
        _delete_topics(found.kafka, _TASK_PREFIXES)


def _delete_topics(bootstrap: str, prefixes: set[str]) -> None:
    """Best effort: a topic still in use or a slow broker leaves some behind."""
    if not prefixes:
        return
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        names = admin.list_topics(timeout=10).topics
        doomed = [t for t in names if any(t.startswith(p + ".") for p in prefixes)]
        for start in range(0, len(doomed), 500):
            for future in admin.delete_topics(doomed[start : start + 500]).values():
                future.exception(timeout=60)
    except Exception as exc:  # never fail the session over clean-up
        print(f"test topics left in Kafka: {exc}")


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
        task = TaskConfig.model_validate(data)
        _TASK_PREFIXES.update({task.topic_prefix, task.sink_topic_prefix})
        return task

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
