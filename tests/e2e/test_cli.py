"""The `headwater` command as a user runs it: a task file, `run --until-caught-up`, `status`,
`cleanup`, and the one-line errors for what a user gets wrong."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.sample_db import create_sample
from producers.postgres.connection import connect
from producers.postgres.replication import slot_info

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

HEADWATER = [sys.executable, "-m", "headwater.cli"]


def headwater(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEADWATER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def write_task(task: TaskConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(task.model_dump(by_alias=True, exclude_none=True)))
    return path


def test_run_status_cleanup(make_task: Callable[..., TaskConfig], tmp_path: Path) -> None:
    task = make_task()
    with connect(task.source.url) as conn:
        create_sample(conn, 100)
    task_file = write_task(task, tmp_path / "task.yaml")

    ran = headwater("run", str(task_file), "--until-caught-up", "--quiet", "--timeout", "240")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "caught up" in ran.stdout
    assert all(c.matches for c in compare_task(task))

    shown = headwater("status", str(task_file), "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["producer"]["snapshot_status"] == "done"
    assert status["producer"]["tables"]["public.customers"]["rows"] == 100
    assert status["total_lag"] == 0 and len(status["partitions"]) == 3
    assert status["slot"]["retained_wal_bytes"] >= 0
    text = headwater("status", str(task_file))
    assert "public.customers" in text.stdout and "total lag 0" in text.stdout

    cleaned = headwater("cleanup", str(task_file), "--topics", "--target")
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"dropped replication slot {task.slot_name}" in cleaned.stdout
    with connect(task.source.url) as conn:
        assert slot_info(conn, task.slot_name) is None
    again = headwater("cleanup", str(task_file))  # twice is harmless
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: t\nsorce: {}\n", "sorce: unknown field"),
        (
            "name: t\nsource: {url: 'postgresql://postgres@127.0.0.1:1/x'}\n",
            "cannot connect to source",
        ),
        (
            "name: t\nsource: {url: 'postgresql://no_such_user@127.0.0.1:5432/postgres'}\n",
            'role "no_such_user" does not exist',
        ),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    task_file = tmp_path / "task.yaml"
    task_file.write_text(content)
    ran = headwater("run", str(task_file), "--until-caught-up", "--quiet", timeout=60)
    assert ran.returncode == 1
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in ran.stderr


def test_table_without_key_is_refused_before_anything_is_created(
    make_task: Callable[..., TaskConfig], tmp_path: Path
) -> None:
    task = make_task()
    with connect(task.source.url) as conn:
        conn.execute("CREATE TABLE keyed (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE loose (a int)")
    ran = headwater("run", str(write_task(task, tmp_path / "t.yaml")), "--quiet", timeout=60)
    assert ran.returncode == 1
    assert "without a primary key: public.loose" in ran.stderr
    with connect(task.source.url) as conn:
        assert slot_info(conn, task.slot_name) is None
        assert not conn.execute("SELECT 1 FROM pg_publication").fetchall()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_a_second_run_resumes(
    make_task: Callable[..., TaskConfig], tmp_path: Path, sig: signal.Signals
) -> None:
    task = make_task()
    with connect(task.source.url) as conn:
        create_sample(conn, 50)
    task_file = write_task(task, tmp_path / "task.yaml")
    proc = subprocess.Popen(
        [*HEADWATER, "run", str(task_file), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started as a background job inherits SIGINT ignored, and Python keeps
        # an ignored SIGINT ignored: give the command the disposition a terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shown = headwater("status", str(task_file), "--json")
            if (
                shown.returncode == 0
                and json.loads(shown.stdout)["total_lag"] == 0
                and (json.loads(shown.stdout)["producer"] or {}).get("snapshot_status") == "done"
            ):
                break
            time.sleep(1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode in (0, 130), err[-2000:]
    assert "stopping stages" in out
    with connect(task.source.url) as conn:
        info = slot_info(conn, task.slot_name)
        assert info is not None and not info["active"]  # released, kept for the next run
        conn.execute("UPDATE customers SET name = 'after the stop' WHERE id = 1")
    again = headwater("run", str(task_file), "--until-caught-up", "--quiet", "--timeout", "120")
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(c.matches for c in compare_task(task))
