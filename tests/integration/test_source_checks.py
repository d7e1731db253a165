"""A PostgreSQL source that is not set up for CDC is refused before anything is created,
with one line that names the fix: wal_level, the REPLICATION attribute, slots exhausted, a
publication owned by someone else. Throwaway clusters with the wrong settings are started
for these tests only."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from headwater.stack.postgres import find_bindir
from headwater.stack.system import current_user, is_root, run_as

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_postgres(*settings: str) -> Iterator[str]:
    """A fresh cluster on a free port with `settings` (`-c name=value` each)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL binaries are missing: run `headwater stack up postgres`")
    owner = "postgres" if is_root() else current_user()
    base = Path(tempfile.mkdtemp(prefix="hw-pg-"))
    base.chmod(0o755)
    if is_root():
        shutil.chown(base, owner, owner)
    data, port = base / "data", free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    init = run_as(owner, initdb, cwd=base)
    assert init.returncode == 0, init.stderr
    options = " ".join([f"-p {port} -c listen_addresses=127.0.0.1 -k {base}", *settings])
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    started = run_as(
        owner, [*pg_ctl, "-o", options, "-w", "-l", str(base / "log"), "start"], cwd=base
    )
    assert started.returncode == 0, started.stderr
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run_as(owner, [*pg_ctl, "-m", "immediate", "stop"], cwd=base)
        shutil.rmtree(base, ignore_errors=True)


def run_task(
    tmp_path: Path, source_url: str, publication: str | None = None
) -> subprocess.CompletedProcess[str]:
    task_file = tmp_path / f"task-{uuid.uuid4().hex[:6]}.yaml"
    extra = f", publication: {publication}" if publication else ""
    task_file.write_text(f"name: checks\nsource: {{url: '{source_url}'{extra}}}\n")
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli", "run", str(task_file), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(ran: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert ran.returncode == 1
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_wal_level_not_logical_is_refused_with_the_fix(tmp_path: Path) -> None:
    with throwaway_postgres("-c wal_level=replica") as url:
        ran = run_task(tmp_path, url)
    assert_one_line_error(ran, "wal_level is 'replica'", "wal_level = logical")


def test_no_free_replication_slot(tmp_path: Path) -> None:
    with throwaway_postgres("-c wal_level=logical", "-c max_replication_slots=1") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
            conn.execute("SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput')")
        ran = run_task(tmp_path, url)
        with psycopg.connect(url, autocommit=True) as conn:
            publications = conn.execute("SELECT count(*) FROM pg_publication").fetchone()
    assert_one_line_error(ran, "all 1 replication slots", "max_replication_slots")
    assert publications == (0,)  # nothing half-created


def test_user_without_replication_attribute(pg_databases: tuple[str, str], tmp_path: Path) -> None:
    source, _ = pg_databases
    role = f"hw_plain_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute(f"GRANT SELECT ON t TO {role}")
    try:
        ran = run_task(tmp_path, source.replace("postgres@", f"{role}@"))
    finally:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("DROP TABLE t")
            conn.execute(f"DROP ROLE {role}")
    assert_one_line_error(ran, f"user {role} lacks the REPLICATION attribute", "ALTER ROLE")


def test_foreign_publication_lacking_tables(pg_databases: tuple[str, str], tmp_path: Path) -> None:
    source, _ = pg_databases
    role = f"hw_repl_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN REPLICATION")
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute(f"GRANT SELECT ON t TO {role}")
        conn.execute("CREATE PUBLICATION theirs")
    try:
        url = source.replace("postgres@", f"{role}@")
        ran = run_task(tmp_path, url, publication="theirs")
    finally:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("DROP PUBLICATION theirs")
            conn.execute("DROP TABLE t")
            conn.execute(f"DROP ROLE {role}")
    assert_one_line_error(ran, "publication theirs is owned by postgres", "public.t")
