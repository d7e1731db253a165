"""Tests only: a producer that kills itself (SIGKILL) right after Kafka acknowledged
streamed events and before the source is told, the moment a crash repeats the most. Set
HEADWATER_TEST_CRASH_AFTER_FLUSH=1 for the first such flush, or `mid-transaction` for the
first one inside a transaction, in the environment the producer process starts with."""

from __future__ import annotations

import os
import signal

CRASH_ENV = "HEADWATER_TEST_CRASH_AFTER_FLUSH"


def crash_point(in_tx: bool) -> None:
    """Called after a flush of streamed events, before the source position is saved."""
    when = os.environ.get(CRASH_ENV)
    if when == "1" or (when == "mid-transaction" and in_tx):
        os.kill(os.getpid(), signal.SIGKILL)
