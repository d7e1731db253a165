"""The task-state store against the real Kafka: saves that do not wait arrive in order."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from headwater.config import TaskConfig
from producers.task_state import TableProgress, TaskState, TaskStateStore

pytestmark = pytest.mark.integration


def test_saves_without_waiting_arrive_in_order_before_a_waited_one(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task()
    store = TaskStateStore(task.kafka.bootstrap_servers)
    store.ensure_topic()
    state = TaskState(task.name, snapshot_status="done")
    for n in range(1, 51):
        state.events_streamed = n
        store.save(state, wait=False)
    # Delivered in the background: no flush, no further save.
    deadline = time.monotonic() + 20
    loaded = store.load(task.name)
    while (loaded is None or loaded.events_streamed != 50) and time.monotonic() < deadline:
        time.sleep(0.2)
        loaded = store.load(task.name)
    assert loaded is not None and loaded.events_streamed == 50
    # A queued record keeps the content it had when queued.
    state.tables["public.t"] = TableProgress(rows=7)
    store.save(state, wait=False)
    state.tables["public.t"].rows = 8
    deadline = time.monotonic() + 20
    while (loaded is None or "public.t" not in loaded.tables) and time.monotonic() < deadline:
        time.sleep(0.2)
        loaded = store.load(task.name)
    assert loaded is not None and loaded.tables["public.t"].rows == 7
    store.save(state)  # waits: the next load has it
    final = store.load(task.name)
    assert final is not None and final.tables["public.t"].rows == 8
