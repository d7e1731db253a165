"""The transform stage as a faust-streaming application: one agent reads the task's raw
topics, applies the rules and writes `<prefix>.transformed.<schema>.<table>`, exactly once.

faust cannot subscribe to a regex with aiokafka (`Consumer.subscribe` in its aiokafka driver
passes topic names only), so the app subscribes to the raw topics that exist, and when the
set changes (a table added to the source) the app is stopped, which commits, and started
again with the new set.

Exactly once rests on faust's `processing_guarantee="exactly_once"` (one transactional
producer per source partition, its offsets committed in its transaction) plus the transport
in transforms/faust_eos.py, which sends every output record through the transactional
producer of the partition its input came from and keeps commits between events. The sink
reads with isolation.level=read_committed. More workers of one task (same group
`headwater-<task>-transform`) share the raw partitions; a restarted worker takes over its
predecessor's transactional ids, which aborts whatever that one left open."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka.errors import IllegalOperation, InvalidProducerEpoch, ProducerFenced
from confluent_kafka.admin import AdminClient
from faust.streams import Stream
from faust.types import EventT, StreamT

from headwater.config import TaskConfig
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from transforms import faust_eos
from transforms.errors import TableMappingError, TransformError
from transforms.load import task_engine
from transforms.outputs import OutputBuilder, transform_group
from transforms.records import RecordTransformer, is_raw_topic

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 10.0
_TOPICS_EVERY_S = 2.0
_GIL_SWITCH_S = 0.0005
# A transactional producer fenced by another worker's newer one: rejoin, at most this often.
_REJOIN_ERRORS = (ProducerFenced, InvalidProducerEpoch, IllegalOperation)
_MAX_REJOINS = 5
_REJOIN_WINDOW_S = 600.0


def app_settings(task: TaskConfig) -> dict[str, Any]:
    """faust settings of the task's transform app (group id = app id)."""
    servers = [s.strip() for s in task.kafka.bootstrap_servers.split(",") if s.strip()]
    return {
        "broker": [f"{faust_eos.SCHEME}://{s}" for s in servers],
        "processing_guarantee": "exactly_once",
        "consumer_auto_offset_reset": "earliest",
        # The commit interval is the transaction length: output becomes visible to the
        # read_committed sink when its transaction commits.
        "broker_commit_interval": 0.5,
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "producer_linger_ms": 5,
        "producer_acks": -1,
        # faust forgets the acked offsets of revoked partitions before it would commit them
        # at a rebalance; faust_eos rolls their transactions back instead.
        "stream_wait_empty": False,
        "topic_disable_leader": True,
        "web_enabled": False,
        "autodiscover": False,
        # Only faust's tables write there (this app has none); one directory for all tasks.
        "datadir": Path(tempfile.gettempdir()) / "headwater-faust",
    }


class RawTopics:
    """The task's raw topics as Kafka lists them now."""

    def __init__(self, task: TaskConfig) -> None:
        self.prefix = task.topic_prefix
        self.admin = AdminClient({"bootstrap.servers": task.kafka.bootstrap_servers})

    def names(self) -> frozenset[str]:
        listed = self.admin.list_topics(timeout=10).topics
        return frozenset(t for t in listed if is_raw_topic(self.prefix, t))


class FaustTransform:
    """The transform stage of one task: its faust app (rebuilt when the raw topics change),
    the record transformer the app's agent runs, and the counters."""

    def __init__(self, task: TaskConfig) -> None:
        engine = task_engine(task)
        if engine is None:
            raise TableMappingError(f"task {task.name} has no table_mappings; nothing to run")
        faust_eos.register()
        self.task = task
        self.registry = SchemaRegistry(task.registry.url)
        self.transformer = RecordTransformer(
            engine, AvroSerde(self.registry), task.topic_prefix, task.sink_topic_prefix
        )
        self.outputs = OutputBuilder(task, self.transformer)
        self.raw_topics = RawTopics(task)
        self.consumed = 0
        self.produced = 0
        self._rejoins: list[float] = []

    def build_app(self, topics: frozenset[str]) -> faust.App:
        """A faust app whose one agent transforms `topics`."""
        app = faust.App(transform_group(self.task), **app_settings(self.task))
        # faust.Worker sets this; without it faust silently drops exactly_once to
        # at-least-once (`App.in_transaction` requires it). We run the app without a Worker,
        # which would take over the process's signals and logging.
        app.in_worker = True
        if not app.in_transaction:
            raise TransformError("faust app not in exactly_once mode; check faust's version")
        raw = app.topic(*sorted(topics), key_serializer="raw", value_serializer="raw")
        guard = faust_eos.event_guard(app)

        async def transform(stream: StreamT[bytes]) -> None:
            # Acks by hand: an event is acked in the same guarded step as its sends.
            manual = cast(Stream[bytes], stream).noack()
            async for event in manual.events():
                await self.transform_event(app, guard, event)

        app.agent(raw, name="transform")(transform)
        return app

    async def transform_event(
        self, app: faust.App, guard: faust_eos.EventGuard, event: EventT[bytes]
    ) -> None:
        """Send one raw event's output and ack it, with no commit in between."""
        async with guard.lock:
            if guard.failure is not None:
                raise TransformError("the transform stage failed; stopping") from None
            try:
                await self._transform_and_ack(app, guard, event)
            except BaseException as exc:
                guard.fail(exc)
                raise

    async def _transform_and_ack(
        self, app: faust.App, guard: faust_eos.EventGuard, event: EventT[bytes]
    ) -> None:
        message = event.message
        consumer = cast(faust_eos.GuardedConsumer, app.consumer)
        if guard.rolling_back or message.tp not in consumer.assignment():
            return  # unacked: read again after the rebalance, by whoever owns it then
        if consumer.already_processed(message):
            log.debug("%s@%d: already sent; skipped", message.tp, message.offset)
            event.ack()  # fetched twice across a rebalance; its output is already sent
            return
        records = self.outputs.records(
            message.topic, message.partition, message.offset, message.key, message.value
        )
        producer = app.producer
        for out in records:
            # faust_eos routes this through the source partition's transactional producer.
            await producer.send(
                out.topic, out.key, out.value, out.partition, None, out.headers or None
            )
        event.ack()
        self.consumed += 1
        self.produced += len(records)

    async def serve(self, stop: threading.Event) -> None:
        """Run until `stop` is set; raise TransformError if the app failed."""
        # faust reads Kafka in a thread of its own; with the default 5 ms switch interval the
        # event loop waits that long for the GIL after each socket write (measured: 1.5x
        # the events/s with 0.5 ms). The stage has its process to itself.
        sys.setswitchinterval(_GIL_SWITCH_S)
        while not stop.is_set():
            topics = await self._wait_for_topics(stop)
            if topics:
                await self._serve_topics(topics, stop)

    async def _wait_for_topics(self, stop: threading.Event) -> frozenset[str]:
        """The raw topics once there are some and they stopped changing (the producer
        creates its tables' topics in a burst at start)."""
        seen = self.raw_topics.names()
        while not stop.is_set():
            await asyncio.sleep(_TOPICS_EVERY_S)
            now = self.raw_topics.names()
            if now and now == seen:
                return now
            seen = now
        return frozenset()

    async def _serve_topics(self, topics: frozenset[str], stop: threading.Event) -> None:
        log.info("task %s: transforming %d raw topics", self.task.name, len(topics))
        app = self.build_app(topics)
        guard = faust_eos.event_guard(app)
        await app.start()
        checked_at = progress_at = time.monotonic()
        try:
            while not stop.is_set() and guard.failure is None and not app.crashed:
                await asyncio.sleep(0.2)
                now = time.monotonic()
                if now - progress_at >= _PROGRESS_EVERY_S:
                    self._log_progress()
                    progress_at = now
                if now - checked_at >= _TOPICS_EVERY_S:
                    checked_at = now
                    if self.raw_topics.names() != topics:
                        log.info("task %s: raw topics changed; restarting", self.task.name)
                        break
        finally:
            await app.stop()
        failure = guard.failure or app.crash_reason
        if failure is None:
            return
        reason = f"{type(failure).__name__}: {failure}"
        if isinstance(failure, _REJOIN_ERRORS) and self._may_rejoin():
            # Another worker took over a transactional id (a rebalance it saw first): nothing
            # uncommitted is kept, so a new app rejoins and resumes from the committed offsets.
            log.warning("task %s: %s; rejoining the group", self.task.name, reason)
            return
        raise TransformError(
            f"task {self.task.name}: transform stage failed: {reason}"
        ) from failure

    def _may_rejoin(self) -> bool:
        now = time.monotonic()
        self._rejoins = [t for t in self._rejoins if now - t < _REJOIN_WINDOW_S] + [now]
        return len(self._rejoins) <= _MAX_REJOINS

    def _log_progress(self) -> None:
        log.info(
            "task %s: transformed %d records into %d (%d dropped by rules)",
            self.task.name,
            self.consumed,
            self.produced,
            self.transformer.dropped,
        )

    def close(self) -> None:
        self.registry.close()


def run_faust_processor(task: TaskConfig, stop: threading.Event) -> None:
    """Run the transform stage of `task` as a faust worker until `stop` is set."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    transform = FaustTransform(task)
    try:
        loop.run_until_complete(transform.serve(stop))
    finally:
        transform.close()
        loop.close()
