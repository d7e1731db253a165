"""Benchmark: PostgreSQL streaming under a pgbench write load, on the local stack.

Measures what issue 3 asks of the PostgreSQL source while it streams:

- phase A: the write rate pgbench reaches alone with a custom script (50% INSERT, 40% UPDATE,
  10% DELETE of random keys, each transaction one statement) on a table of ~200-byte rows;
- phase B: the same load at full rate while headwater streams it into a target database:
  the producer's lag sampled every second (the slot's confirmed_flush_lsn against
  pg_current_wal_lsn, in bytes; the sink's Kafka lag, in events), its slope, and how long
  after pgbench stopped the target held everything;
- phase C: pgbench at half the phase A rate (`--rate`): per-row end-to-end latency, the time
  a row became visible in the target (a BEFORE INSERT OR UPDATE trigger on the target table
  sets `applied_at = clock_timestamp()`) minus its source `written_at` (set by the write
  with clock_timestamp()). Both clocks are this machine's. The Kafka record timestamp (the
  producer's produce() time) splits it into a producer part and a sink part. Phase C runs
  once per `--setting` (the task restarted with other latency settings) to show where the
  latency comes from;
- peak RSS (VmHWM) and CPU seconds of each stage process, and in phase C how busy the whole
  machine was (all its processes, from /proc/stat): at half of pgbench's full rate a 2-core
  machine is near saturation, where the tail latency depends on the scheduler.

Prints numbers; asserts nothing. Creates and drops its own databases, task, slot and topics.
How to read the numbers, and what was measured: docs/benchmarks.md.

    .venv/bin/python bench/bench_pg_streaming.py --seconds 20 --clients 4 --rows 100000
    .venv/bin/python bench/bench_pg_streaming.py --setting '' --setting batch_wait_s=0.05
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from bench_pg_source import create_db, db_url, drop_db, stage_cpu
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from consumers.lag import sink_lag
from headwater.cleanup import cleanup_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.stack import manager
from producers.postgres.pgoutput import parse_lsn
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.tables import TableId
from schemas.topics import key_subject, table_topic, value_subject

TABLE = TableId("public", "stream_rows")

# About 200 bytes a row; `written_at` is set by every write, as close to its commit as a
# one-statement transaction allows.
TABLE_SQL = """
CREATE TABLE stream_rows (
    id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL,
    status varchar(16) NOT NULL, note text NOT NULL, ref uuid NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""
# Inserts take new keys from a sequence that starts after the seeded rows.
SEQUENCE_SQL = """
CREATE SEQUENCE stream_rows_id START {start} OWNED BY stream_rows.id;
ALTER TABLE stream_rows ALTER id SET DEFAULT nextval('stream_rows_id')"""
SEED_SQL = """
INSERT INTO stream_rows (id, account, amount, status, note, ref, written_at)
SELECT g, g %% 10000, (g %% 100000) / 100.0, 'seed', repeat(md5(g::text), 3), md5(g::text)::uuid,
       clock_timestamp()
FROM generate_series(1, %(rows)s) g"""
# The target's visibility clock: set on every row the sink inserts or updates. The sink
# writes only the columns its events carry, so the extra column is left to the trigger.
TRIGGER_SQL = """
ALTER TABLE stream_rows ADD COLUMN applied_at timestamptz;
CREATE FUNCTION stamp_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.applied_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER stamp_applied BEFORE INSERT OR UPDATE ON stream_rows
    FOR EACH ROW EXECUTE FUNCTION stamp_applied()"""

# pgbench scripts with their weights: one statement each, so each is one transaction.
SCRIPTS = {
    "insert": (
        5,
        "\\set account random(1, 10000)\n\\set cents random(1, 10000000)\n"
        "INSERT INTO stream_rows (account, amount, status, note, ref) VALUES (:account, "
        ":cents / 100.0, 'ins', repeat(md5(random()::text), 3), gen_random_uuid());\n",
    ),
    "update": (
        4,
        "\\set id random(1, :rows)\n"
        "UPDATE stream_rows SET amount = amount + 1, status = 'upd', "
        "written_at = clock_timestamp() WHERE id = :id;\n",
    ),
    "delete": (1, "\\set id random(1, :rows)\nDELETE FROM stream_rows WHERE id = :id;\n"),
}

# Latency settings `--setting` may change, and where each lives in the task file.
SETTING_PATHS = {
    "ack_interval_s": ("source", "ack_interval_s"),
    "batch_wait_s": ("target", "batch_wait_s"),
    "batch_size": ("target", "batch_size"),
    "linger_ms": ("kafka", "producer", "linger.ms"),
}


# --- databases ------------------------------------------------------------------------------


def prepare_source(source: str, rows: int) -> None:
    with psycopg.connect(db_url(source), autocommit=True) as conn:
        conn.execute(TABLE_SQL)
        conn.execute(sql.SQL(SEQUENCE_SQL).format(start=sql.Literal(rows + 1)))
        conn.execute(SEED_SQL, {"rows": rows})
        conn.execute("VACUUM ANALYZE stream_rows")


def prepare_target(target: str) -> None:
    """The target table as the sink would create it, plus `applied_at` and its trigger."""
    with psycopg.connect(db_url(target), autocommit=True) as conn:
        conn.execute(TABLE_SQL.replace("DEFAULT clock_timestamp()", ""))
        conn.execute(TRIGGER_SQL)


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def changed_rows(source_url: str) -> int:
    """Rows inserted, updated and deleted in the source table so far (pgbench's backends
    report their counts when they disconnect)."""
    return int(
        scalar(
            source_url,
            "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
            "WHERE relname = 'stream_rows'",
        )
    )


# --- pgbench ---------------------------------------------------------------------------------


@dataclass
class PgbenchRun:
    tps: float
    latency_ms: float
    transactions: int
    seconds: float
    changes: int  # rows actually changed (an UPDATE or DELETE of a deleted key changes none)


def write_scripts(folder: Path) -> list[str]:
    args = []
    for name, (weight, text) in SCRIPTS.items():
        path = folder / f"{name}.sql"
        path.write_text(text)
        args += ["-f", f"{path}@{weight}"]
    return args


def pgbench_command(
    source: str, scripts: list[str], args: argparse.Namespace, rate: float | None
) -> list[str]:
    command = ["pgbench", "-n", "-h", "127.0.0.1", "-U", "postgres"]
    command += ["-c", str(args.clients), "-j", str(min(args.clients, os.cpu_count() or 1))]
    command += ["-T", str(args.seconds), "-D", f"rows={args.rows}", *scripts]
    if rate is not None:
        command += ["--rate", f"{rate:.0f}"]
    return [*command, source]


def parse_pgbench(output: str, seconds: float, changes: int) -> PgbenchRun:
    def number(pattern: str) -> float:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else float("nan")

    return PgbenchRun(
        tps=number(r"tps = ([\d.]+)"),
        latency_ms=number(r"latency average = ([\d.]+) ms"),
        transactions=int(number(r"number of transactions actually processed: (\d+)")),
        seconds=seconds,
        changes=changes,
    )


def finish_pgbench(
    proc: subprocess.Popen[str], source_url: str, before: int, started: float
) -> PgbenchRun:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"pgbench failed: {err.strip() or out.strip()}")
    seconds = time.monotonic() - started
    return parse_pgbench(out, seconds, changed_rows(source_url) - before)


def start_pgbench(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextmanager
def killed_on_error(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Never leave pgbench running behind a failed phase."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_pgbench(source_url: str, command: list[str]) -> PgbenchRun:
    before = changed_rows(source_url)
    started = time.monotonic()
    proc = start_pgbench(command)
    with killed_on_error(proc):
        return finish_pgbench(proc, source_url, before, started)


# --- the task ---------------------------------------------------------------------------------


def parse_setting(text: str) -> dict[str, float]:
    """`batch_wait_s=0.05,linger_ms=5` as a dict; '' is the task's defaults."""
    setting: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in SETTING_PATHS:
            raise SystemExit(f"--setting: unknown key {key!r}; use one of {sorted(SETTING_PATHS)}")
        try:
            setting[key] = float(value)
        except ValueError:
            raise SystemExit(f"--setting: {key} needs a number, e.g. {key}=0.05") from None
    return setting


def task_config(
    name: str, source: str, target: str, mode: str, setting: dict[str, float]
) -> TaskConfig:
    data: dict[str, Any] = {
        "name": name,
        "mode": mode,
        "source": {"url": db_url(source)},
        "target": {
            "url": db_url(target).replace("postgresql://", "postgresql+psycopg://"),
            "create_tables": False,
        },
        "tables": {"include": [str(TABLE)]},
        "kafka": {"producer": {}},
    }
    for key, value in setting.items():
        *parents, leaf = SETTING_PATHS[key]
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = int(value) if key in ("batch_size", "linger_ms") else value
    return TaskConfig.model_validate(data)


@dataclass
class StageUsage:
    """Peak RSS of each stage process and of its own children (the full load's snapshot
    workers), the most seen over every run and sample; CPU seconds summed over runs."""

    peak_kb: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def sample(self, runner: TaskRunner) -> None:
        """Note the peak RSS so far of every stage and of its children alive now."""
        for name, proc in runner.procs.items():
            if proc.pid is None:
                continue
            self._peak(name, proc.pid)
            for child in descendants(proc.pid):
                self._peak(f"{name} child", child)

    def _peak(self, label: str, pid: int) -> None:
        try:
            found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        except OSError:
            return  # the process has gone
        if found:
            self.peak_kb[label] = max(self.peak_kb.get(label, 0), int(found.group(1)))

    def finish(self, runner: TaskRunner) -> None:
        """Before the stages stop: their last peaks and their CPU time (with that of the
        children they waited for)."""
        self.sample(runner)
        for name, seconds in stage_cpu(runner).items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + seconds


def descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [p for child in children for p in (int(child), *descendants(int(child)))]


@contextmanager
def running(task: TaskConfig, usage: StageUsage) -> Iterator[TaskRunner]:
    runner = TaskRunner(task, log_level=logging.WARNING)
    runner.start()
    try:
        yield runner
    finally:
        usage.finish(runner)
        runner.stop()


def wait_visible(runner: TaskRunner, source: str, target: str, timeout: float = 120) -> float:
    """Touch one source row and wait until the target shows it: proves the producer streams
    and the sink has joined its group and applies (a restarted sink may report no lag from
    the offsets stored in the target before it consumes anything). Returns the seconds."""
    start = time.monotonic()
    with psycopg.connect(db_url(source), autocommit=True) as conn:
        row = conn.execute(
            "UPDATE stream_rows SET written_at = clock_timestamp() "
            "WHERE id = (SELECT min(id) FROM stream_rows) RETURNING id, written_at"
        ).fetchone()
    assert row is not None, "the source table is empty"
    with psycopg.connect(db_url(target), autocommit=True) as conn:
        while time.monotonic() - start < timeout:
            found = conn.execute(
                "SELECT 1 FROM stream_rows WHERE id = %s AND written_at = %s", row
            ).fetchone()
            if found:
                return time.monotonic() - start
            runner.check()  # a stage that died says why, rather than a timeout
            time.sleep(0.05)
    raise SystemExit(f"a source change did not reach the target within {timeout:.0f} s")


def caught_up_after(runner: TaskRunner, timeout: float) -> float | None:
    """Seconds until the target holds everything the source committed so far; None if not
    within `timeout`."""
    start = time.monotonic()
    try:
        runner.wait_caught_up(timeout, poll_s=0.2)
    except TimeoutError:
        return None
    return time.monotonic() - start


# --- the lag while pgbench runs (phases B and C) -------------------------------------------


@dataclass
class LagSample:
    t: float  # seconds since pgbench started
    wal_lsn: int
    bytes_behind: int  # pg_current_wal_lsn() - confirmed_flush_lsn of the slot
    kafka_lag: int  # events in Kafka the sink has not applied


def sample_lag(task: TaskConfig, t0: float) -> LagSample:
    with psycopg.connect(task.source.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_current_wal_lsn()::text, confirmed_flush_lsn::text "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (task.slot_name,),
        ).fetchone()
    assert row is not None, "the task's slot is missing"
    wal, confirmed = parse_lsn(str(row[0])), parse_lsn(str(row[1]))
    kafka_lag = sum(max(0, p.lag) for p in sink_lag(task))
    return LagSample(time.monotonic() - t0, wal, max(0, wal - confirmed), kafka_lag)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


@dataclass
class StreamedRun:
    """A pgbench run while headwater streams, with the lag sampled every second."""

    pgbench: PgbenchRun
    samples: list[LagSample]
    catch_up_s: float | None  # from pgbench's end until the target held everything
    cores_busy: float = 0.0  # the machine's busy CPU while pgbench ran, in cores


def streamed_run(
    task: TaskConfig,
    runner: TaskRunner,
    source: str,
    command: list[str],
    seconds: int,
    usage: StageUsage,
) -> StreamedRun:
    before = changed_rows(db_url(source))
    t0 = time.monotonic()
    busy0 = busy_cpu_s()
    proc = start_pgbench(command)
    samples = []
    with killed_on_error(proc):
        # Bounded: pgbench runs `seconds`; give it as much again to finish.
        while proc.poll() is None and time.monotonic() - t0 < 2 * seconds + 30:
            runner.check()
            usage.sample(runner)
            samples.append(sample_lag(task, t0))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - samples[-1].t)))
        run = finish_pgbench(proc, db_url(source), before, t0)
    cores_busy = (busy_cpu_s() - busy0) / max(1e-9, time.monotonic() - t0)
    catch_up = caught_up_after(runner, timeout=300)
    return StreamedRun(run, samples, catch_up, cores_busy)


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy since boot (every process, not only
    this bench's: the machine may be shared), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- phase C: latency at half rate --------------------------------------------------------------


@dataclass
class Latencies:
    """Milliseconds per row, by the write that produced its last version."""

    end_to_end: dict[str, list[float]]
    producer: list[float]  # written_at -> Kafka record timestamp (produce() call)
    sink: list[float]  # Kafka record timestamp -> applied_at
    # (written_at in epoch ms, producer, sink, end to end) of the rows with both times
    timeline: list[tuple[float, float, float, float]] = field(default_factory=list)


def topic_end(task: TaskConfig) -> int:
    consumer = Consumer({"bootstrap.servers": task.kafka.bootstrap_servers, "group.id": "bench"})
    try:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(table_topic(task.topic_prefix, TABLE), 0), timeout=10, cached=False
        )
        return int(high)
    finally:
        consumer.close()


def produce_times(task: TaskConfig, start_offset: int) -> dict[tuple[int, datetime], int]:
    """(id, written_at) -> the Kafka record timestamp (ms) of each change event after
    `start_offset` of the task's single-partition topic."""
    end = topic_end(task)
    registry = SchemaRegistry(task.registry.url)
    serde = AvroSerde(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    found: dict[tuple[int, datetime], int] = {}
    try:
        topic = table_topic(task.topic_prefix, TABLE)
        consumer.assign([TopicPartition(topic, 0, start_offset)])
        offset, deadline = start_offset, time.monotonic() + 120
        while offset < end - 1 and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error() is not None:
                    continue
                offset = max(offset, msg.offset() or 0)
                value = msg.value()
                if value is None:
                    continue  # a tombstone
                _, record = serde.decode(value)
                after = record.get("after")
                if after is not None:
                    found[(int(after["id"]), after["written_at"])] = int(msg.timestamp()[1])
    finally:
        consumer.close()
        registry.close()
    return found


def latencies(task: TaskConfig, target: str, since: datetime, start_offset: int) -> Latencies:
    with psycopg.connect(db_url(target), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, status, written_at, applied_at FROM stream_rows WHERE written_at >= %s",
            (since,),
        ).fetchall()
    produced = produce_times(task, start_offset)
    result = Latencies({"insert": [], "update": []}, [], [])
    for key, status, written_at, applied_at in rows:
        kind = "insert" if status == "ins" else "update"
        result.end_to_end[kind].append((applied_at - written_at).total_seconds() * 1000)
        kafka_ms = produced.get((key, written_at))
        if kafka_ms is not None:
            written_ms = written_at.timestamp() * 1000
            result.producer.append(kafka_ms - written_ms)
            result.sink.append(applied_at.timestamp() * 1000 - kafka_ms)
            total = (applied_at - written_at).total_seconds() * 1000
            result.timeline.append((written_ms, result.producer[-1], result.sink[-1], total))
    return result


@dataclass
class HalfRateResult:
    setting: str
    run: StreamedRun
    latency: Latencies


def phase_half_rate(
    task: TaskConfig,
    runner: TaskRunner,
    bench: Bench,
    command: list[str],
    label: str,
) -> HalfRateResult:
    runner.wait_caught_up(120, poll_s=0.2)
    wait_visible(runner, bench.source, bench.target)
    start_offset = topic_end(task)
    since = scalar(db_url(bench.source), "SELECT clock_timestamp()")
    run = streamed_run(task, runner, bench.source, command, bench.args.seconds, bench.usage)
    latency = latencies(task, bench.target, since, start_offset)
    if bench.args.timeline:
        write_timeline(bench.args.timeline, label, latency)
    return HalfRateResult(label, run, latency)


def write_timeline(path: Path, label: str, latency: Latencies) -> None:
    """Append each row's latencies, in write order, for a look at when the slow ones came."""
    new = not path.exists()
    with path.open("a") as out:
        if new:
            out.write("setting,written_ms,producer_ms,sink_ms,end_to_end_ms\n")
        for written_ms, producer_ms, sink_ms, total_ms in sorted(latency.timeline):
            out.write(
                f"{label!r},{written_ms:.0f},{producer_ms:.1f},{sink_ms:.1f},{total_ms:.1f}\n"
            )


# --- report ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> str:
    marks = " ".join(
        f"{name} {percentile(values, q):7.0f}"
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
    )
    return f"n={len(values):6d}  {marks}  max {max(values, default=float('nan')):7.0f} ms"


def report_baseline(run: PgbenchRun, args: argparse.Namespace) -> None:
    print(f"\nphase A  pgbench alone, {args.clients} clients, {args.seconds} s")
    print(
        f"  {run.tps:8,.0f} tps  (latency avg {run.latency_ms:.2f} ms; "
        f"{run.changes / args.seconds:,.0f} rows changed/s)"
    )


def report_lag(result: StreamedRun, show_samples: bool) -> None:
    """The lag's growth while pgbench ran, and the time to catch up after it stopped."""
    run, samples = result.pgbench, result.samples
    if len(samples) < 2:
        print("  too few lag samples")
        return
    wal_rate = (samples[-1].wal_lsn - samples[0].wal_lsn) / max(1e-9, samples[-1].t - samples[0].t)
    byte_slope = slope([(s.t, s.bytes_behind) for s in samples])
    event_slope = slope([(s.t, s.kafka_lag) for s in samples])
    if show_samples:
        print("  t(s)  slot bytes behind  sink Kafka lag (events)")
        for s in samples:
            print(f"  {s.t:4.0f}  {s.bytes_behind:17,d}  {s.kafka_lag:10,d}")
    print(
        f"  WAL written {wal_rate / 1e6:.2f} MB/s; slot lag slope {byte_slope / 1e3:+,.1f} kB/s "
        f"({byte_slope / max(1.0, wal_rate):+.1%} of the WAL rate); "
        f"sink lag slope {event_slope:+,.0f} events/s"
    )
    # Growth over the run in seconds of incoming writes: the acknowledgement interval and
    # the sink's batches make both lags a sawtooth, so a growth under a second is noise.
    changes_per_s = run.changes / max(1e-9, run.seconds)
    span = samples[-1].t - samples[0].t
    slot_s = byte_slope * span / max(1.0, wal_rate)
    sink_s = event_slope * span / max(1.0, changes_per_s)
    grew = max(slot_s, sink_s) > 1.0
    print(
        f"  lag grew: {'yes' if grew else 'no'} (over the run by {slot_s:+.1f} s of WAL in the "
        f"slot, {sink_s:+.1f} s of changes in Kafka; yes above 1 s)"
    )
    # What the producer confirmed per second, in rows: the incoming rate less the growth.
    kept = changes_per_s * (1 - max(0.0, byte_slope) / max(1.0, wal_rate))
    print(f"  producer confirmed ~{kept:,.0f} rows/s (sharing the CPU with pgbench)")
    if result.catch_up_s is None:
        print("  target did not catch up within 300 s after pgbench stopped")
        return
    backlog = samples[-1].bytes_behind / max(1.0, wal_rate / max(1e-9, changes_per_s))
    print(
        f"  target caught up {result.catch_up_s:.1f} s after pgbench stopped "
        f"(backlog then ~{backlog:,.0f} rows in the slot, {samples[-1].kafka_lag:,} "
        "events in Kafka)"
    )


def report_full_rate(result: StreamedRun, baseline: PgbenchRun) -> None:
    run = result.pgbench
    print("\nphase B  pgbench at full rate while headwater streams")
    print(
        f"  {run.tps:8,.0f} tps  ({run.tps / baseline.tps:.2f} of phase A; "
        f"{run.changes / max(1e-9, run.seconds):,.0f} rows changed/s)"
    )
    report_lag(result, show_samples=True)


def report_half_rate(result: HalfRateResult, rate: float, baseline_tps: float) -> None:
    run, lat = result.run.pgbench, result.latency
    print(
        f"\nphase C  pgbench --rate {rate:,.0f} ({rate / baseline_tps:.2f} of phase A), "
        f"setting: {result.setting or 'task defaults'}"
    )
    print(
        f"  {run.tps:8,.0f} tps reached; {run.changes / max(1e-9, run.seconds):,.0f} rows changed/s"
    )
    report_lag(result.run, show_samples=False)
    print(
        f"  machine busy {result.run.cores_busy:.2f} of {os.cpu_count()} cores while pgbench ran "
        "(every process; near all of them, latency is the scheduler's)"
    )
    for kind, values in lat.end_to_end.items():
        print(f"  end-to-end {kind:6s}  {spread(values)}")
    both = lat.end_to_end["insert"] + lat.end_to_end["update"]
    p99 = percentile(both, 0.99)
    print(f"  end-to-end all     {spread(both)}  p99 < 500 ms: {'yes' if p99 < 500 else 'no'}")
    print(f"    written -> Kafka {spread(lat.producer)}  (producer: read, decode, encode)")
    print(f"    Kafka -> applied {spread(lat.sink)}  (linger, broker, sink wait, apply)")


def report_usage(usage: StageUsage, rows: int, loaded: int) -> None:
    print(
        f"\nstage processes: peak RSS over all runs; CPU summed, for {loaded:,} rows of full "
        f"load and {rows:,} rows changed while streaming"
    )
    for name, kb in sorted(usage.peak_kb.items()):
        cpu = f"CPU {usage.cpu_s[name]:7.1f} s" if name in usage.cpu_s else "(CPU in its parent's)"
        print(f"  {name:15s} peak RSS {kb / 1024:7,.0f} MB  {cpu}")


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=20, help="length of each pgbench run")
    parser.add_argument("--clients", type=int, default=4, help="pgbench clients")
    parser.add_argument("--rows", type=int, default=100_000, help="seeded source rows")
    parser.add_argument("--mode", choices=["cdc", "full-load-and-cdc"], default="full-load-and-cdc")
    parser.add_argument(
        "--rate",
        type=float,
        help="phase C write rate in transactions/s (default: half the phase A rate)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        help="latency settings for one phase C run, e.g. 'batch_wait_s=0.05,linger_ms=5' "
        f"(keys: {', '.join(SETTING_PATHS)}); repeat for more runs; '' = task defaults. "
        "Default: '' and 'batch_wait_s=0.05'",
    )
    parser.add_argument(
        "--timeline",
        type=Path,
        help="append every phase C row's latencies (CSV, in write order) to this file",
    )
    args = parser.parse_args()
    if args.setting is None:
        args.setting = ["", "batch_wait_s=0.05"]
    return args


@dataclass
class Bench:
    """One run: its databases, task name, pgbench scripts and what it measured so far."""

    args: argparse.Namespace
    source: str
    target: str
    name: str
    scripts: list[str]
    usage: StageUsage = field(default_factory=StageUsage)
    streamed: int = 0  # rows changed while headwater streamed

    def pgbench(self, rate: float | None) -> list[str]:
        return pgbench_command(self.source, self.scripts, self.args, rate)

    def task(self, setting: dict[str, float]) -> TaskConfig:
        return task_config(self.name, self.source, self.target, self.args.mode, setting)

    def prepare(self) -> None:
        started = time.monotonic()
        prepare_source(self.source, self.args.rows)
        prepare_target(self.target)
        print(
            f"rows={self.args.rows:,} (~200 bytes), clients={self.args.clients}, "
            f"seconds={self.args.seconds}, mode={self.args.mode}; seeded in "
            f"{time.monotonic() - started:.1f} s; load average now "
            f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine)"
        )

    def start_streaming(self, runner: TaskRunner) -> None:
        """Wait for the full load (or the slot) and for a first change to come through."""
        started = time.monotonic()
        runner.wait_caught_up(600, on_status=lambda _: self.usage.sample(runner), poll_s=0.2)
        wait_visible(runner, self.source, self.target)
        print(
            f"\nheadwater start ({self.args.mode}) caught up in {time.monotonic() - started:.1f} s"
        )

    def full_rate(self, task: TaskConfig, runner: TaskRunner, baseline: PgbenchRun) -> None:
        full = streamed_run(
            task, runner, self.source, self.pgbench(None), self.args.seconds, self.usage
        )
        report_full_rate(full, baseline)
        self.streamed += full.pgbench.changes

    def half_rate(
        self, task: TaskConfig, runner: TaskRunner, label: str, rate: float, baseline: PgbenchRun
    ) -> None:
        half = phase_half_rate(task, runner, self, self.pgbench(rate), label)
        report_half_rate(half, rate, baseline.tps)
        self.streamed += half.run.pgbench.changes

    def run(self, settings: list[tuple[str, dict[str, float]]]) -> None:
        self.prepare()
        baseline = run_pgbench(db_url(self.source), self.pgbench(None))
        report_baseline(baseline, self.args)
        rate = self.args.rate or baseline.tps / 2
        loaded = int(scalar(db_url(self.source), "SELECT count(*) FROM stream_rows"))
        for index, (label, setting) in enumerate(settings):
            task = self.task(setting)
            with running(task, self.usage) as runner:
                if index == 0:  # the task starts (full load), then phase B
                    self.start_streaming(runner)
                    self.full_rate(task, runner, baseline)
                self.half_rate(task, runner, label, rate, baseline)
        report_usage(self.usage, self.streamed, loaded if self.args.mode != "cdc" else 0)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f} (shared machine)")


def main() -> None:
    args = parse_args()
    settings = [(text, parse_setting(text)) for text in args.setting]
    manager.up(["kafka", "registry", "postgres"], echo=lambda _: None)
    run_id = uuid.uuid4().hex[:6]
    source, target = f"bench_stream_src_{run_id}", f"bench_stream_dst_{run_id}"
    for db in (source, target):
        create_db(db)
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(args, source, target, f"benchstream{run_id}", write_scripts(Path(folder)))
        try:
            bench.run(settings)
        finally:
            clean_up(bench.task({}), (source, target))


def clean_up(task: TaskConfig, databases: tuple[str, ...]) -> None:
    """Drop the task's slot, publication, progress record and topics, then the databases."""
    try:
        for _line in cleanup_task(task, topics=True):
            pass
    except Exception as exc:  # still drop the databases (and with them the slot)
        print(f"cleanup of task {task.name}: {exc}")
    drop_subjects(task)
    for db in databases:
        drop_db(db)


def drop_subjects(task: TaskConfig) -> None:
    """Delete the task's key and value subjects from the registry (soft, then permanent);
    a subject that is not there is fine."""
    topic = table_topic(task.topic_prefix, TABLE)
    with httpx.Client(timeout=10) as http:
        for subject in (key_subject(topic), value_subject(topic)):
            for suffix in ("", "?permanent=true"):
                http.delete(f"{task.registry.url}/subjects/{subject}{suffix}")


if __name__ == "__main__":
    main()
