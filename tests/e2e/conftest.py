"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headwater.config import TaskConfig
from headwater.runner import TaskRunner


@pytest.fixture
def runner(task: TaskConfig) -> Iterator[TaskRunner]:
    """The module's `task` running (all its stages), stopped after the test.

    A module that needs another shape of runner defines its own `runner` fixture."""
    started = TaskRunner(task)
    started.start()
    yield started
    started.stop(timeout=20)
