"""`headwater assess` against real services: it passes on the local stack, and flags each
misconfiguration that can be set up safely per database (REPLICA IDENTITY NOTHING, a table
without a primary key, a user without REPLICATION, a MariaDB user without replication
privileges, an incompatible existing target table, unreachable Kafka and target)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from headwater.assess.findings import Finding
from headwater.assess.run import assess_task
from headwater.config import TaskConfig
from headwater.sample_db import create_sample
from tests.mysql_support import execute, mysql_db, mysql_task
from tests.services import Endpoints

pytestmark = pytest.mark.integration
__all__ = ["mysql_db", "mysql_task"]


def _status(findings: list[Finding], subject: str) -> str:
    matching = [f.status for f in findings if f.subject == subject]
    assert matching, f"no finding {subject!r} in {[f.subject for f in findings]}"
    return matching[0]


def _failed(findings: list[Finding]) -> dict[str, str]:
    return {f.subject: f.detail for f in findings if f.status == "fail"}


@pytest.fixture
def sample_task(make_task: Callable[..., TaskConfig]) -> TaskConfig:
    task = make_task()
    with psycopg.connect(task.source.url, autocommit=True) as conn:
        create_sample(conn, 50)
    return task


def test_passes_on_the_local_stack(sample_task: TaskConfig, tmp_path: Path) -> None:
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(sample_task.model_dump(by_alias=True, exclude_none=True)))
    done = subprocess.run(
        [sys.executable, "-m", "headwater.cli", "assess", str(task_file), "--json",
         str(tmp_path / "a.json"), "--html", str(tmp_path / "a.html")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["verdict"] in ("pass", "warn") and not report["failed"]
    assert {"public.customers primary key", "wal_level"} <= {
        f["subject"] for f in report["findings"]
    }
    assert (tmp_path / "a.html").read_text().startswith("<!doctype html>")


def test_flags_postgres_source_misconfigurations(
    sample_task: TaskConfig, services: Endpoints
) -> None:
    with psycopg.connect(sample_task.source.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders REPLICA IDENTITY NOTHING")
        conn.execute("CREATE TABLE keyless (a int, b text)")
    role = f"hw_norepl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.postgres, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        url = sample_task.source.url.replace("postgres@", f"{role}@")
        task = sample_task.model_copy(
            update={"source": sample_task.source.model_copy(update={"url": url})}
        )
        result = assess_task(task)
    finally:
        with psycopg.connect(services.postgres, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    failed = _failed(result.findings)
    assert "NOTHING" in failed["public.orders replica identity"]
    assert "public.keyless primary key" in failed
    assert "public.keyless replica identity" in failed
    assert "neither REPLICATION nor superuser" in failed["replication privilege"]
    assert "missing on" in failed["SELECT privilege"]  # the new role reads nothing
    assert _status(result.findings, "wal_level") == "pass"
    assert result.failed


def test_a_keyless_table_under_replica_identity_full_is_a_warning_not_a_failure(
    sample_task: TaskConfig,
) -> None:
    with psycopg.connect(sample_task.source.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE keyless_full (a int, b text)")
        conn.execute("ALTER TABLE keyless_full REPLICA IDENTITY FULL")
        conn.execute("CREATE TABLE keyed_by_index (a int NOT NULL, b text)")
        conn.execute("CREATE UNIQUE INDEX keyed_by_index_a ON keyed_by_index (a)")
        conn.execute("ALTER TABLE keyed_by_index REPLICA IDENTITY USING INDEX keyed_by_index_a")
    findings = assess_task(sample_task).findings
    assert _status(findings, "public.keyless_full primary key") == "warn"
    assert _status(findings, "public.keyless_full replica identity") == "warn"
    assert _status(findings, "public.keyed_by_index primary key") == "pass"
    assert "public.keyless_full primary key" not in _failed(findings)


def test_flags_target_and_kafka_problems(sample_task: TaskConfig) -> None:
    with psycopg.connect(sample_task.target.url.replace("+psycopg", ""), autocommit=True) as c:
        c.execute("CREATE TABLE customers (id integer, name text, PRIMARY KEY (name))")
    task = sample_task.model_copy(
        update={"kafka": sample_task.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})}
    )
    failed = _failed(assess_task(task).findings)
    assert "primary key differs" in failed["public.customers in the target"]
    assert "unreachable" in failed["broker"]

    unreachable = sample_task.model_copy(
        update={
            "target": sample_task.target.model_copy(
                update={"url": "postgresql://x:pw@127.0.0.1:1/db"}
            )
        }
    )
    failed = _failed(assess_task(unreachable).findings)
    assert "cannot connect to target" in failed["reachable"]
    assert "pw" not in failed["reachable"]


@pytest.fixture
def restricted_mariadb_user(mysql_db: str) -> Iterator[str]:
    """A MariaDB user with SELECT on the test database only; its URL."""
    db = mysql_db.rsplit("/", 1)[1]
    user = f"hw_sel_{uuid.uuid4().hex[:8]}"
    execute(mysql_db, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw123'")
    execute(mysql_db, f"GRANT SELECT ON `{db}`.* TO '{user}'@'%'")
    base = mysql_db.split("://", 1)[1].split("@", 1)[1]
    yield f"mysql://{user}:pw123@{base}"
    execute(mysql_db, f"DROP USER '{user}'@'%'")


def test_mariadb_source_passes_then_flags_privileges(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, restricted_mariadb_user: str
) -> None:
    execute(
        mysql_db,
        "CREATE TABLE gauges (id BIGINT UNSIGNED PRIMARY KEY, kind ENUM('a','b'), v DOUBLE)",
        "CREATE TABLE nokey (a INT)",
    )
    task = mysql_task(tables={"include": [f"{mysql_db.rsplit('/', 1)[1]}.gauges"]})
    result = assess_task(task)
    assert not result.failed, _failed(result.findings)
    for setting in ("binlog_format", "binlog_row_image", "binlog_row_metadata", "privileges"):
        assert _status(result.findings, setting) == "pass"
    notes = {m.column: m.note for m in result.mappings}
    assert "numeric(20,0)" in notes["id"] and "enum" in notes["kind"]

    restricted = mysql_task(source={"url": restricted_mariadb_user}, tables={"include": ["*.*"]})
    result = assess_task(restricted)
    failed = _failed(result.findings)
    assert "REPLICATION SLAVE" in failed["privileges"]
    assert any(s.endswith("nokey primary key") for s in failed)
    assert "pw123" not in str(result.to_json())
