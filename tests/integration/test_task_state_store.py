"""The task-state store against the real Kafka: saves that do not wait arrive in order."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from headwater.config import TaskConfig
from producers.task_state import TableProgress, TaskState, TaskStateStore

pytestmark = pytest.mark.integration


def loaded_when(store: TaskStateStore, task: str, ready: Callable[[TaskState], bool]) -> TaskState:
    """The task's state once `ready` holds for it (or the last one read, after 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        state = store.load(task)
        if (state is not None and ready(state)) or time.monotonic() > deadline:
            assert state is not None
            return state
        time.sleep(0.2)


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
    loaded = loaded_when(store, task.name, lambda s: s.events_streamed == 50)
    assert loaded.events_streamed == 50
    # A queued record keeps the content it had when queued.
    state.tables["public.t"] = TableProgress(rows=7)
    store.save(state, wait=False)
    state.tables["public.t"].rows = 8
    loaded = loaded_when(store, task.name, lambda s: "public.t" in s.tables)
    assert loaded.tables["public.t"].rows == 7
    store.save(state)  # waits: the next load has it
    final = store.load(task.name)
    assert final is not None and final.tables["public.t"].rows == 8
