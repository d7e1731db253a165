"""`headwater validate` while CDC is in flight: changes the sink has not applied yet show up
as differences in the first pass, and the recheck (once lag reaches the source's position)
finds them applied, so a live migration validates clean."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.sample_db import create_sample
from headwater.validate.result import TaskValidation
from headwater.validate.run import ValidateOptions, validate_task
from producers.postgres.connection import connect

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_in_flight_changes_are_rechecked_not_reported(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task()
    with connect(task.source.url) as conn:
        create_sample(conn, 200)
    runner = TaskRunner(task)
    runner.start()
    try:
        runner.wait_caught_up(180)
    finally:
        runner.stop(timeout=20)

    # Changes the stopped task has not carried yet: the first pass must see them.
    with connect(task.source.url) as conn:
        conn.execute("UPDATE customers SET balance = balance + 1 WHERE id <= 20")
        conn.execute("DELETE FROM order_lines WHERE order_id = 5")
        conn.execute("INSERT INTO customers (id, external_id, name) VALUES (9001, 1, 'late')")

    results: list[TaskValidation] = []
    validating = threading.Thread(
        target=lambda: results.append(validate_task(task, ValidateOptions(recheck_timeout_s=150)))
    )
    validating.start()
    time.sleep(5)  # the first pass over 200 customers takes well under a second
    runner = TaskRunner(task)
    runner.start()
    try:
        validating.join(timeout=200)
    finally:
        runner.stop(timeout=20)
    assert results, "validate did not finish"
    result = results[0]
    assert result.recheck == "differing rows rechecked after the task caught up"
    rechecked = {t.table: t.rechecked for t in result.tables}
    assert rechecked["public.customers"] == 21 and rechecked["public.order_lines"] >= 1
    assert result.matches, [(t.table, t.rows[:3]) for t in result.tables if not t.matches]
