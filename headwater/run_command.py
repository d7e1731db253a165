"""`headwater run`: start the task's stages, show progress, stop cleanly on Ctrl-C/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time

from rich.console import Console
from rich.live import Live

from headwater.config import TaskConfig
from headwater.display import render
from headwater.preflight import preflight
from headwater.runner import StageFailed, TaskRunner
from headwater.status import TaskStatus, collect_status


def run_task(
    task: TaskConfig, until_caught_up: bool, timeout: float, quiet: bool, console: Console
) -> int:
    """Run `task`; the exit code for the command."""
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    tables = preflight(task)
    previous = signal.signal(signal.SIGTERM, _on_signal)
    # Stage logs would tear the live display; with --quiet they are the progress report.
    runner = TaskRunner(task, log_level=logging.INFO if quiet else logging.WARNING)
    runner.start()
    console.print(f"task {task.name}: {tables} tables, started producer and sink ({task.mode})")
    live = None if quiet else Live(console=console, refresh_per_second=2, transient=False)
    try:
        if live:
            live.start()
        show = (lambda s: live.update(render(s))) if live else None
        if until_caught_up or task.mode == "full-load":
            runner.wait_caught_up(timeout, on_status=show)
            console.print(f"task {task.name}: caught up")
            return 0
        _watch(runner, task, stop, show)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if live:
            live.stop()
        console.print(f"task {task.name}: stopping stages")
        runner.stop()
        signal.signal(signal.SIGTERM, previous)


def _watch(runner: TaskRunner, task: TaskConfig, stop: threading.Event, show: object) -> None:
    """Until told to stop: check the stages, refresh the display every 2 s."""
    last = 0.0
    while not stop.is_set():
        runner.check()
        if callable(show) and time.monotonic() - last > 2:
            status: TaskStatus = collect_status(task)
            show(status)
            last = time.monotonic()
        stop.wait(0.5)
    if not runner.alive():
        raise StageFailed("every stage has stopped")
