"""Starts a task's stages as processes, watches them, and stops them cleanly.

Each stage runs in its own process (as it would on its own machine); a stage that fails
stops the task with its one-line reason. `wait_caught_up` is the definition of done used by
`headwater run --until-caught-up`, the demo and the tests.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from headwater.config import TaskConfig
from headwater.stages import run_stage, stage_kind
from headwater.status import TaskStatus, collect_status, source_wal_lsn

log = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """A stage of the task stopped with an error."""


class TaskRunner:
    """The processes of one task on this machine."""

    def __init__(self, task: TaskConfig, log_level: int = logging.INFO) -> None:
        self.task = task
        self.log_level = log_level
        self._ctx = mp.get_context("spawn")
        self.errors: mp.Queue[tuple[str, str]] = self._ctx.Queue()
        self.procs: dict[str, BaseProcess] = {}

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The task's stages; the transform stage only when it has table mappings."""
        sinks = ("sink", *(f"sink-{i}" for i in range(2, self.task.target.workers + 1)))
        if self.task.has_table_mappings:
            count = self.task.transform.workers
            transforms = ("transform", *(f"transform-{i}" for i in range(2, count + 1)))
            return ("producer", *transforms, *sinks)
        return ("producer", *sinks)

    def start(self) -> None:
        workers, partitions = self.task.target.workers, self.task.kafka.partitions
        if workers > partitions:
            log.warning(
                "task %s: target.workers is %d but topics have kafka.partitions %d: %d sink(s) "
                "will idle; raise kafka.partitions (new topics only) or lower target.workers",
                self.task.name,
                workers,
                partitions,
                workers - partitions,
            )
        for name in self.stage_names:
            self.start_stage(name)

    def start_stage(self, name: str) -> None:
        """Start (or restart, after it died) one stage's process."""
        data = self.task.model_dump(by_alias=True)
        if stage_kind(name) in ("sink", "transform"):
            # Each worker its own client id, so the group's members can be told apart, and
            # its own static group membership: a worker started again after it died takes
            # its partitions back at once instead of a rebalance that waits out the dead
            # member's session (measured: three sink restarts cost a test 16 s, 9.6 s so).
            member = f"headwater-{self.task.name}-{name}"
            kafka = data["kafka"]
            kafka["consumer"] = {"group.instance.id": member} | dict(kafka["consumer"])
            if name != stage_kind(name):
                kafka["consumer"] = {"client.id": member} | kafka["consumer"]
        proc = self._ctx.Process(
            target=run_stage,
            args=(name, data, self.errors, self.log_level),
            name=f"headwater-{self.task.name}-{name}",
        )
        proc.start()
        self.procs[name] = proc

    def check(self) -> None:
        """Raise StageFailed if a stage has failed."""
        try:
            stage, message = self.errors.get_nowait()
        except queue.Empty:
            pass
        else:
            raise StageFailed(f"{stage}: {message}")
        for name, proc in self.procs.items():
            if proc.exitcode not in (None, 0):
                raise StageFailed(f"{name} exited with code {proc.exitcode}; see its log above")
        for name, stage_proc in self.procs.items():
            if stage_kind(name) in ("sink", "transform") and stage_proc.exitcode == 0:
                raise StageFailed(f"{name} stopped unexpectedly")
        producer = self.procs.get("producer")
        if producer is not None and producer.exitcode == 0 and self.task.mode != "full-load":
            raise StageFailed("producer stopped unexpectedly")

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every stage to stop, and wait; kill what does not stop in `timeout`."""
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: the stage finishes its batch and acknowledges
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("stage %s did not stop in %.0fs; killing it", proc.name, timeout)
                proc.kill()
                proc.join(5)

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs.values())

    def wait_caught_up(
        self,
        timeout: float,
        on_status: Callable[[TaskStatus], None] | None = None,
        poll_s: float = 1.0,
    ) -> TaskStatus:
        """Block until the full load is done and the target holds every change the source
        had committed when the full load finished (or this call began, if later)."""
        deadline = time.monotonic() + timeout
        target_lsn: int | None = None
        while True:
            self.check()
            status = collect_status(self.task)
            if on_status:
                on_status(status)
            if status.load_finished:
                if target_lsn is None and self.task.mode != "full-load":
                    target_lsn = source_wal_lsn(self.task)
                if status.caught_up_to(target_lsn):
                    return status
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"task {self.task.name} did not catch up within {timeout:.0f}s: "
                    f"{status.summary()}"
                )
            time.sleep(poll_s)
