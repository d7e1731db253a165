"""Entry points of a task's stages as child processes: each rebuilds its configuration,
turns SIGTERM/SIGINT into a clean stop, and reports a failure as one line to the runner."""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

from headwater.config import TaskConfig
from headwater.gc_tuning import tune_gc

log = logging.getLogger(__name__)

StageFn = Callable[[TaskConfig, threading.Event], None]


def _producer(task: TaskConfig, stop: threading.Event) -> None:
    from producers.errors import SourceError

    if task.source.engine == "mysql":
        from producers.mysql.producer import run_mysql_producer

        run_mysql_producer(task, stop)
        return
    if task.source.engine != "postgres":
        raise SourceError(
            f"source.engine {task.source.engine!r} has no producer yet; use engine: postgres"
        )
    from producers.postgres.producer import run_postgres_producer

    run_postgres_producer(task, stop)


def _sink(task: TaskConfig, stop: threading.Event) -> None:
    from consumers.sink import run_sink

    run_sink(task, stop)


def _transform(task: TaskConfig, stop: threading.Event, name: str = "transform") -> None:
    # The faust app by default; the confluent-kafka loop is the documented alternative.
    if task.transform.engine == "confluent":
        from transforms.processor import run_processor

        # A stable transactional id per worker slot: a restarted worker fences its predecessor.
        run_processor(task, stop, worker_id=name.partition("-")[2] or "0")
        return
    from transforms.faust_app import run_faust_processor

    run_faust_processor(task, stop)


STAGES: dict[str, StageFn] = {"producer": _producer, "transform": _transform, "sink": _sink}


def stage_kind(name: str) -> str:
    """The stage a process runs: `sink-2` (the second sink worker) runs `sink`."""
    return name.split("-", 1)[0]


# Errors a user can fix: shown as their message, without a traceback.
_USER_ERRORS = (
    "SourceError",
    "TargetError",
    "ConfigError",
    "RegistryError",
    "DeliveryError",
    "SinkError",
    "TableMappingError",
    "TransformError",
)


def run_stage(
    name: str, task_data: dict[str, Any], errors: Queue[tuple[str, str]], log_level: int
) -> None:
    """Run stage `name` until stopped; put (stage, message) on `errors` if it fails."""
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry call
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    task = TaskConfig.model_validate(task_data)
    tune_gc()
    try:
        if stage_kind(name) == "transform":
            _transform(task, stop, name)
        else:
            STAGES[stage_kind(name)](task, stop)
    except InterruptedError:
        return
    except Exception as exc:
        if type(exc).__name__ in _USER_ERRORS:
            message = str(exc)
        else:
            log.error("task %s: stage %s failed:\n%s", task.name, name, traceback.format_exc())
            message = f"{type(exc).__name__}: {exc}"
        errors.put((name, message))
        raise SystemExit(1) from None
