"""`headwater demo` (the README's first command, without the install): a small demo run ends
with every row matching, and leaves no replication slot behind to hold WAL."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.e2e


def test_demo_matches_every_row_and_drops_its_slot(services: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "headwater.cli", "demo", "--rows", "200", "--changes", "60"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every row matches" in done.stdout
    with psycopg.connect(services.postgres, autocommit=True) as conn:
        slots = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = 'demo_source'"
        ).fetchall()
    assert slots == []
