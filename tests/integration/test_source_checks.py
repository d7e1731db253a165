"""A source that is not set up for CDC is refused with the fix named: a throwaway
PostgreSQL cluster with wal_level=replica, started for this test only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.stack.postgres import find_bindir
from headwater.stack.system import current_user, is_root, run_as

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def replica_only_postgres() -> Iterator[str]:
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL binaries are missing: run `headwater stack up postgres`")
    owner = "postgres" if is_root() else current_user()
    base = Path(tempfile.mkdtemp(prefix="hw-replica-"))
    base.chmod(0o755)
    if is_root():
        shutil.chown(base, owner, owner)
    data, port = base / "data", free_port()
    init = run_as(
        owner, [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], cwd=base
    )
    assert init.returncode == 0, init.stderr
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c wal_level=replica"
    started = run_as(
        owner,
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(base / "log"),
            "start",
        ],
        cwd=base,
    )
    assert started.returncode == 0, started.stderr
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run_as(
            owner, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], cwd=base
        )
        shutil.rmtree(base, ignore_errors=True)


def test_wal_level_not_logical_is_refused_with_the_fix(
    replica_only_postgres: str, tmp_path: Path
) -> None:
    task_file = tmp_path / "task.yaml"
    task_file.write_text(f"name: walcheck\nsource: {{url: '{replica_only_postgres}'}}\n")
    ran = subprocess.run(
        [sys.executable, "-m", "headwater.cli", "run", str(task_file), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ.copy(),
    )
    assert ran.returncode == 1
    assert "wal_level is 'replica'" in ran.stderr and "wal_level = logical" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
