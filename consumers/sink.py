"""The sink's consume loop: read a task's change topics, collapse each batch, apply it with
its offsets in one target transaction, then commit the offsets to Kafka (for lag display
only). Where to resume is read from the target on every assignment, so a crash neither loses
nor repeats a change. The error policy lives here and nowhere else: transient failures are
retried with backoff, anything else stops the sink with one clear log line. A record the
target refuses goes to the dead-letter topic (`target.on_error: dlq`, the default) or stops
the sink (`stop`); a table the target cannot take (missing with `create_tables: false`, a
changed column type) is stopped alone: its partitions are paused and their offsets kept,
and the target records why for `headwater status`. A truncate on a topic with several
partitions runs once every partition reached its copy (consumers/truncates.py): until then
the partitions that reached it are held (consumers/truncate_hold.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from consumers.batch import BatchError, CollapsedBatch, Origin, SinkRecord, collapse
from consumers.dead_letters import DeadLetterWriter, RawMessage
from consumers.decode import RecordDecoder, is_change_topic, subscription_pattern
from consumers.errors import PositionConflict, SinkError, is_transient
from consumers.native_batch import add_native, native_batcher
from consumers.offsets import Partition
from consumers.outcome import ApplyOutcome, NativeRefused, RecordRefused, Rejected, TargetSink
from consumers.truncate_hold import HeldPartitions, add_held, hold_truncates
from consumers.truncates import attempt_of
from headwater.config import TaskConfig
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.topics import value_subject

log = logging.getLogger(__name__)

T = TypeVar("T")

METADATA_REFRESH_MS = 2000
"""How often the regex subscription looks for new table topics."""

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
_PROGRESS_EVERY_S = 10.0


def consumer_config(task: TaskConfig) -> dict[str, Any]:
    """Kafka consumer settings of the sink; `kafka.consumer` in the task file overrides."""
    return {
        "bootstrap.servers": task.kafka.bootstrap_servers,
        "group.id": task.sink_group,
        "client.id": f"headwater-{task.name}-sink",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        # A sink that died holds its partitions until its session expires; 10 s (Kafka's
        # default is 45 s) lets a restarted sink take over quickly.
        "session.timeout.ms": 10_000,
        # Fetch big: with the 1 MiB per partition default, a sink reading a backlog waited
        # on fetches most of its time (measured: 210k events consumed in 1.7 s; 0.35 s so).
        "max.partition.fetch.bytes": 16 << 20,
        "fetch.max.bytes": 64 << 20,
        # Once its local queue is full librdkafka waits this long before fetching again
        # (1 s by default); a sink drains the queue in a fraction of that and then stalled
        # (measured: 160-340 ms gaps in a 1M-event backlog).
        "fetch.queue.backoff.ms": 10,
        **task.kafka.consumer,
    }


def is_cooperative(config: dict[str, Any]) -> bool:
    """Whether the group rebalances incrementally (assign and revoke only what changes)."""
    strategy = str(config.get("partition.assignment.strategy", ""))
    return "cooperative" in strategy or str(config.get("group.protocol", "")) == "consumer"


def describe_positions(messages: Iterable[SinkRecord]) -> str:
    """`topic[partition]@first..last` for each partition of a batch, for log lines."""
    spans: dict[Partition, tuple[int, int]] = {}
    for r in messages:
        first, last = spans.get((r.topic, r.partition), (r.offset, r.offset))
        spans[(r.topic, r.partition)] = (min(first, r.offset), max(last, r.offset))
    return ", ".join(f"{t}[{p}]@{a}..{b}" for (t, p), (a, b) in sorted(spans.items()))


def target_sink(task: TaskConfig) -> TargetSink:
    """The apply path of the task's target engine."""
    if task.target.engine == "mysql":
        from consumers.mysql_sink import MySqlSink

        return MySqlSink(task)
    if task.target.engine == "sqlite":
        from consumers.sql_offsets import sql_dialect
        from consumers.sql_sink import SqlSink

        return SqlSink(task, sql_dialect(task))
    from consumers.postgres_sink import PostgresSink

    return PostgresSink(task)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch decoded and collapsed, ready to apply: the messages it came from, those it
    applies, its Python-decoded records (for positions in messages), and the generation of
    the loop's state it was prepared under."""

    messages: list[Message]
    live: list[Message]
    records: list[SinkRecord]
    batch: CollapsedBatch
    generation: int


_CONSUME_STEP = 250


class SinkLoop:
    """One sink consumer of one task; `run` until `stop` is set or a terminal error."""

    def __init__(self, task: TaskConfig, stop: threading.Event) -> None:
        self.task = task
        self.stop = stop
        # The transformed topics when the task has table mappings, else the raw ones.
        self.prefix = task.sink_topic_prefix
        self.registry = SchemaRegistry(task.registry.url)
        self.decoder = RecordDecoder(self.prefix, AvroSerde(self.registry))
        self.target = target_sink(task)
        self.native = native_batcher(task, self.decoder, self.target)
        self.dead_letters: DeadLetterWriter | None = None
        self.stopped_topics: set[str] = set()
        self._change_topics: dict[str, bool] = {}
        # One batch is applied in this thread while the loop fetches and collapses the
        # next; `_generation` moves whenever what a prepared batch assumed may have changed
        # (assignment, a paused or held partition, a rewind), and a stale one is dropped.
        self._applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-apply")
        self._pending: tuple[_Prepared, Future[ApplyOutcome]] | None = None
        self._generation = 0
        self._deferred: BaseException | None = None  # raised in a rebalance callback
        config = consumer_config(task)
        self.consumer = Consumer(config)
        self.cooperative = is_cooperative(config)
        self.held = HeldPartitions(self.consumer)
        self._partition_counts: dict[str, int] = {}
        self.expected: dict[Partition, int | None] = {}
        self.events_applied = 0
        self._prepared: set[str] = set()  # topics whose target table was prepared on assign
        self._progress_at = time.monotonic()
        self._progress_events = 0

    def run(self) -> None:
        self.consumer.subscribe(
            [subscription_pattern(self.prefix)],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("task %s: sink consuming %s.* into the target", self.task.name, self.prefix)
        while not self.stop.is_set():
            messages = self._next_batch()
            ready = self._prepare(messages) if messages else None
            self._drain()
            if ready is not None:
                if ready.generation == self._generation:
                    self._pending = (ready, self._applier.submit(self._apply, ready))
                else:
                    self._drop(ready)
            if self.held.due():
                self._drain()
                self._release_moved()
            self._log_progress()
        self._drain()

    def _next_batch(self) -> list[Message]:
        """What has arrived, up to `batch_size`; when nothing has, wait up to `batch_wait_s`
        for the first message. A quiet stream is applied as it comes, a busy one in full
        batches (what queued up while the last batch was applied): consume() alone would
        hold every batch for the whole wait unless it filled (measured: p99 >= 0.5 s)."""
        size = self.task.target.batch_size
        messages = self._consume_arrived(size)
        if not messages and self._pending is not None:
            # Nothing waiting: settle the batch being applied before blocking, so its
            # offsets, lag and progress are current while the stream is quiet (not up to
            # batch_wait_s later).
            self._drain()
            messages = self._consume_arrived(size)
        if not messages:
            messages = self.consumer.consume(num_messages=1, timeout=self.task.target.batch_wait_s)
            if messages and size > 1:
                messages.extend(self._consume_arrived(size - 1))
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            raise deferred
        return messages

    def _consume_arrived(self, size: int) -> list[Message]:
        """Up to `size` messages already fetched, taken a few hundred at a time: consume()
        holds the GIL while it builds its messages, and the apply thread waits for it."""
        messages: list[Message] = []
        generation = self._generation
        while len(messages) < size:
            got = self.consumer.consume(
                num_messages=min(_CONSUME_STEP, size - len(messages)), timeout=0
            )
            if not got:
                break
            messages.extend(got)
            if self._generation != generation:
                break  # a rebalance callback ran: the batch ends here, as one call would
        return messages

    def close(self) -> None:
        self._applier.shutdown(wait=True)  # a batch being applied ends first
        closers = [self.consumer.close, self.target.close, self.registry.close]
        if self.dead_letters is not None:
            closers.append(self.dead_letters.close)
        for closing in closers:
            try:
                closing()
            except Exception as exc:
                log.warning("task %s: closing the sink: %s", self.task.name, exc)

    # --- assignment: the target says where each partition resumes ---------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain_in_callback()  # the target's connection is the applier's until then
        self._generation += 1
        wanted = [(p.topic, p.partition) for p in partitions]
        self.held.forget(wanted)
        # A table stopped earlier is tried again when its partitions come back.
        self.stopped_topics -= {p.topic for p in partitions}
        stored = self._retrying(
            lambda: self.target.stored_offsets(wanted), "reading stored offsets"
        )
        for tp in partitions:
            found = stored.get((tp.topic, tp.partition))
            tp.offset = found.next_offset if found is not None else OFFSET_BEGINNING
            self.expected[(tp.topic, tp.partition)] = found.next_offset if found else None
            log.info(
                "task %s: assigned %s[%d], resuming at %s",
                self.task.name,
                tp.topic,
                tp.partition,
                found.next_offset if found else "the beginning",
            )
        self._prepare_new_tables({tp.topic for tp in partitions} - {topic for topic, _ in stored})
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        # A partition paused here before (held at a truncate, or its table stopped) stays
        # paused through a rebalance that gives it back; it starts again from the target.
        consumer.resume(partitions)

    def _prepare_new_tables(self, topics: set[str]) -> None:
        """Create the target tables of topics this target has no position for yet, from
        their newest registered schema: a table empty at the source gets no event, and
        would otherwise never exist at the target. Best effort: the first event of a table
        creates it anyway."""
        topics = {t for t in topics if is_change_topic(self.prefix, t)} - self._prepared
        if not topics or not self.task.target.create_tables:
            return
        schemas = []
        try:
            for topic in sorted(topics):
                found = self.registry.latest(value_subject(topic))
                if found is not None:
                    schemas.append(self.decoder.table_schema(topic, found[0]))
            if schemas:
                self.target.prepare_tables(schemas)
        except Exception as exc:  # the tables still come with their first events
            log.warning(
                "task %s: cannot create target tables ahead of their rows: %s", self.task.name, exc
            )
            return
        self._prepared |= topics

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The batch being applied ends (and its offsets are committed) before the
        # partitions go; what was prepared after it is dropped (the generation moves).
        self._drain_in_callback()
        self._generation += 1
        self.held.forget((tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            self.expected.pop((tp.topic, tp.partition), None)
        if self.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    # --- one batch ----------------------------------------------------------------------------

    def _prepare(self, messages: list[Message], native: bool = True) -> _Prepared | None:
        """Decode and collapse a batch (natively where the library takes it)."""
        generation = self._generation
        live = self._live(messages)
        if not live:
            return None
        parts, rest = self.native.take(live) if native and self.native else ([], live)
        decoded = self._retrying(lambda: self._decode(rest), "decoding a batch")
        records, held = self._retrying(
            lambda: hold_truncates(decoded, self._partitions_of), "reading topic metadata"
        )
        try:
            batch = collapse(records)
            add_held(batch, held)
            add_native(batch, parts)
        except BatchError as exc:
            where = describe_positions(records)
            raise SinkError(
                f"task {self.task.name}: {exc} (batch at {where})",
                task=self.task.name,
                position=where,
            ) from exc
        return _Prepared(messages, live, records, batch, generation)

    def _apply(self, ready: _Prepared) -> ApplyOutcome:
        """Apply a prepared batch with its offsets (in the applier thread)."""
        return self._retrying(
            lambda: self.target.apply(
                attempt_of(ready.batch),
                self.expected,
                lambda rejected: self._dead_letter(rejected, ready.live),
            ),
            "applying a batch",
            describe_positions(ready.records),
        )

    def _drain(self) -> None:
        """Wait for the batch being applied and settle it."""
        if self._pending is None:
            return
        ready, future = self._pending
        self._pending = None
        try:
            outcome = future.result()
        except BaseException as exc:
            self._failed(ready, exc)
            return
        self._committed(ready.batch, outcome)

    def _drain_in_callback(self) -> None:
        # An exception must not cross librdkafka's callback: it is raised after consume().
        try:
            self._drain()
        except BaseException as exc:
            if self._deferred is None:
                self._deferred = exc

    def _process(self, messages: list[Message], native: bool = True) -> None:
        """Prepare and apply a batch here and now (nothing else pending)."""
        ready = self._prepare(messages, native)
        if ready is None:
            return
        try:
            outcome = self._apply(ready)
        except BaseException as exc:
            self._failed(ready, exc)
            return
        self._committed(ready.batch, outcome)

    def _drop(self, ready: _Prepared) -> None:
        """Forget a prepared batch whose assumptions moved: its partitions go back to where
        the target stands (or to its first message), to be read again."""
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        first: dict[Partition, int] = {}
        for m in ready.messages:
            where = (str(m.topic()), m.partition() or 0)
            first[where] = min(first.get(where, m.offset() or 0), m.offset() or 0)
        for where, offset in first.items():
            if where not in owned:
                continue
            stored = self.expected.get(where)
            self.consumer.seek(TopicPartition(*where, stored if stored is not None else offset))

    def _failed(self, ready: _Prepared, exc: BaseException) -> None:
        """What a failed apply means: re-applied in Python, rewound, or the sink stops."""
        records = ready.records
        if isinstance(exc, NativeRefused):
            log.info(
                "task %s: the target refused a row of a natively collapsed batch (%s); "
                "applying the batch again in Python to find the record",
                self.task.name,
                exc,
            )
            self._generation += 1
            self._process(ready.messages, native=False)
        elif isinstance(exc, RecordRefused):
            where = describe_positions(records)
            self.target.note_stopped({exc.table: str(exc)} if exc.table else {})
            raise SinkError(
                f"{exc} (batch at {where}; set `target.on_error: dlq` to divert such records)",
                task=self.task.name,
                position=where,
            ) from exc
        elif isinstance(exc, PositionConflict):
            log.warning(
                "task %s: %s; dropping the batch and resuming from the target's offsets",
                self.task.name,
                exc,
            )
            self._rewind(list(ready.batch.positions))
        elif isinstance(exc, SinkError):
            if exc.table:  # the sink stops at this table: status says why
                self.target.note_stopped({exc.table: str(exc)})
            if exc.position:
                raise exc
            where = describe_positions(records)
            raise SinkError(
                f"{exc} (batch at {where})", task=self.task.name, table=exc.table, position=where
            ) from exc
        else:
            raise exc

    def _dead_letter(self, rejected: list[Rejected], live: list[Message]) -> None:
        if self.dead_letters is None:
            self.dead_letters = DeadLetterWriter(self.task)
        raw: dict[Origin, RawMessage] = {
            (str(m.topic()), m.partition() or 0, m.offset() or 0): (m.key(), m.value())
            for m in live
        }
        self.dead_letters.write(rejected, raw)
        for r in rejected:
            log.warning(
                "task %s: record %s of %s refused by the target (%s); sent to %s",
                self.task.name,
                "{}[{}]@{}".format(*r.origin) if r.origin else "?",
                r.table,
                r.reason,
                self.dead_letters.topic,
            )

    def _stop_tables(self, batch: CollapsedBatch, outcome: ApplyOutcome) -> None:
        """Pause the partitions of tables the target cannot take; the rest go on."""
        topics = {t for table in outcome.stopped for t in batch.tables[table].topics}
        topics -= self.stopped_topics
        if not topics:
            return
        self.stopped_topics |= topics
        self._generation += 1
        paused = [tp for tp in self.consumer.assignment() if tp.topic in topics]
        self.consumer.pause(paused)

    def _live(self, messages: list[Message]) -> list[Message]:
        """The messages `_usable` keeps. Per event on a busy sink, so the common case (no
        partition held, no table stopped, no error) costs one topic lookup a message."""
        if self.held.waiting or self.stopped_topics:
            return [m for m in messages if self._usable(m)]
        change = self._change_topics
        live = []
        for m in messages:
            ok = None if m.error() is not None else change.get(m.topic())  # type: ignore[arg-type]
            if ok is None:
                ok = self._usable(m)
            if ok:
                live.append(m)
        return live

    def _usable(self, message: Message) -> bool:
        err = message.error()
        if err is not None:
            if err.fatal():
                raise SinkError(
                    f"task {self.task.name}: Kafka consumer failed: {err.str()}",
                    task=self.task.name,
                )
            log.warning("task %s: Kafka: %s", self.task.name, err.str())
            return False
        topic = str(message.topic())
        if (topic, message.partition() or 0) in self.held:
            return False  # fetched before it was paused; read again once released
        change = self._change_topics.get(topic)
        if change is None:
            change = self._change_topics[topic] = is_change_topic(self.prefix, topic)
        return change and topic not in self.stopped_topics

    def _decode(self, messages: list[Message]) -> list[SinkRecord]:
        records = []
        for m in messages:
            topic, partition, offset = str(m.topic()), m.partition() or 0, m.offset() or 0
            try:
                records.append(self.decoder.decode(topic, partition, offset, m.value()))
            except Exception as exc:
                if is_transient(exc):
                    raise
                raise SinkError(
                    f"task {self.task.name}: cannot decode {topic}[{partition}]@{offset}: {exc}; "
                    "is the topic written by a headwater producer?",
                    task=self.task.name,
                    position=f"{topic}[{partition}]@{offset}",
                ) from exc
        return records

    def _committed(self, batch: CollapsedBatch, outcome: ApplyOutcome) -> None:
        self._stop_tables(batch, outcome)
        offsets = []
        for (topic, partition), pos in outcome.stored.items():
            if (topic, partition) not in batch.positions:
                # Moved past its truncate copy by this batch, which executed the truncate.
                if (topic, partition) in self.held:
                    self._release((topic, partition), pos.next_offset)
                continue
            self.expected[(topic, partition)] = pos.next_offset
            offsets.append(TopicPartition(topic, partition, pos.next_offset))
        self._after_truncate_copies(batch, outcome)
        self.events_applied += batch.events
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # only lag display depends on it
            log.debug("task %s: Kafka offset commit failed: %s", self.task.name, exc)

    # --- truncates on topics with several partitions (consumers/truncates.py) ---------------

    def _partitions_of(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            count = self._partition_counts[topic] = max(1, len(meta.partitions))
        return count

    def _after_truncate_copies(self, batch: CollapsedBatch, outcome: ApplyOutcome) -> None:
        """A partition cut at a copy goes on past it if the truncate ran, else is held."""
        if batch.truncates:
            self._generation += 1
        for held in batch.truncates:
            where = (held.record.topic, held.record.partition)
            pos = outcome.stored.get(where)
            if pos is None:  # its table is stopped: the partition is paused already
                continue
            if pos.next_offset > held.record.offset:
                self._release(where, pos.next_offset)
            else:
                self.held.hold(where, held.record.offset)

    def _release(self, where: Partition, next_offset: int) -> None:
        self._generation += 1
        self.expected[where] = next_offset
        self.held.release(where, next_offset)

    def _release_moved(self) -> None:
        """Release the held partitions whose truncate another sink executed."""
        waiting = list(self.held.waiting)
        stored = self._retrying(lambda: self.target.stored_offsets(waiting), "reading offsets")
        for where, next_offset in self.held.moved(stored).items():
            self._release(where, next_offset)

    def _rewind(self, partitions: list[Partition]) -> None:
        """Seek `partitions` back to the offsets stored in the target."""
        self._generation += 1
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        mine = [p for p in partitions if p in owned]
        stored = self._retrying(lambda: self.target.stored_offsets(mine), "reading offsets")
        for topic, partition in mine:
            found = stored.get((topic, partition))
            offset = found.next_offset if found is not None else OFFSET_BEGINNING
            self.expected[(topic, partition)] = found.next_offset if found else None
            self.consumer.seek(TopicPartition(topic, partition, offset))

    # --- error policy --------------------------------------------------------------------------

    def _retrying(self, action: Callable[[], T], what: str, where: str = "") -> T:
        """Run `action`, retrying transient failures with exponential backoff until `stop`;
        a terminal failure becomes a SinkError naming the task and the position."""
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return action()
            except (PositionConflict, SinkError, RecordRefused, NativeRefused):
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise SinkError(
                        f"task {self.task.name}: {what} failed"
                        + (f" at {where}" if where else "")
                        + f": {exc}",
                        task=self.task.name,
                        position=where,
                    ) from exc
                log.warning(
                    "task %s: %s failed%s (%s); retrying in %.1fs",
                    self.task.name,
                    what,
                    f" at {where}" if where else "",
                    exc,
                    delay,
                )
            if self.stop.wait(delay):
                raise InterruptedError(f"task {self.task.name}: stopped while {what}")
            delay = min(delay * 2, _BACKOFF_MAX_S)

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._progress_at < _PROGRESS_EVERY_S:
            return
        events = self.events_applied - self._progress_events
        if events:
            log.info(
                "task %s: applied %d events in %.0fs (%.0f/s)",
                self.task.name,
                events,
                now - self._progress_at,
                events / (now - self._progress_at),
            )
        self._progress_at, self._progress_events = now, self.events_applied


def run_sink(task: TaskConfig, stop: threading.Event) -> None:
    """Apply the task's change topics to its target until `stop` is set. Raises SinkError
    (after logging it) on a terminal error."""
    loop = SinkLoop(task, stop)
    try:
        loop.run()
    except SinkError as exc:
        log.error("%s", exc)
        raise
    except InterruptedError:
        log.info("task %s: sink stopped while retrying", task.name)
    finally:
        loop.close()
