"""Garbage-collector settings for the long-running stage processes.

A stage allocates a handful of short-lived, acyclic objects per event (Kafka messages,
rows, envelopes): with CPython's default thresholds the collector ran every 700
allocations and a full collection every few batches, each pausing every thread of the
process for tens to hundreds of milliseconds (measured in the sink: 60-340 ms pauses every
~100k events, 17% of its time; each pause is also added to the latency of every event in
flight). Objects alive after start-up (modules, configuration) are frozen out of the
collector's view, and it runs far less often."""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Apply the stage settings to this process (idempotent)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
