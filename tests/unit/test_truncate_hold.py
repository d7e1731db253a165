"""The pure parts of exact truncates and sink workers: a batch cut at each partition's first
truncate copy, the copies put back into the collapsed batch as where each partition stands,
the name of a truncate, the sink worker stages and the status shown for them."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from consumers.batch import SinkRecord, TableChanges, collapse
from consumers.sink_group import SinkMember
from consumers.stopped_tables import StoppedTable
from consumers.truncate_hold import add_held, hold_truncates
from consumers.truncates import attempt_of, truncate_position
from headwater.config import TaskConfig
from headwater.display import render
from headwater.runner import TaskRunner
from headwater.stages import stage_kind
from headwater.status import TaskStatus
from schemas.envelope import ChangeEvent, Op, SourceInfo
from schemas.tables import Column, TableId, TableSchema

SCHEMA = TableSchema(TableId("public", "t"), (Column("id", "int4", "integer"),), ("id",))


OTHER = TableSchema(TableId("public", "u"), SCHEMA.columns, ("id",))


def record(topic: str, partition: int, offset: int, op: Op, key: int = 0) -> SinkRecord:
    schema = OTHER if topic == "single" else SCHEMA
    source = SourceInfo("postgresql", "n", "db", schema.table, 5, lsn=77)
    after = {"id": key} if op != "t" else None
    return SinkRecord(topic, partition, offset, schema, ChangeEvent(op, source, None, after, 5))


def test_a_batch_is_cut_at_the_first_copy_of_each_partition() -> None:
    records = [
        record("a", 0, 10, "c", 1),
        record("a", 1, 20, "t"),
        record("a", 0, 11, "t"),
        record("a", 0, 12, "c", 2),  # after the copy: read again later
        record("a", 1, 21, "c", 3),
        record("single", 0, 5, "t"),  # one partition: applied in the batch
        record("single", 0, 6, "c", 4),
    ]
    counts = {"a": 3, "single": 1}
    kept, held = hold_truncates(records, counts.__getitem__)
    assert [(r.topic, r.offset) for r in kept] == [("a", 10), ("single", 5), ("single", 6)]
    assert [(h.record.partition, h.record.offset, h.partitions) for h in held] == [
        (1, 20, 3),
        (0, 11, 3),
    ]
    batch = collapse(kept)
    add_held(batch, held)
    # Each partition stands on its copy: not consumed until the truncate runs.
    assert batch.positions[("a", 0)].next_offset == 11
    assert batch.positions[("a", 1)].next_offset == 20
    assert batch.positions[("single", 0)].next_offset == 7
    assert batch.truncates == held
    assert not batch.tables[SCHEMA.table].truncated  # the barrier decides, in the target
    assert batch.tables[OTHER.table].truncated


def test_a_truncate_is_named_by_its_source_position() -> None:
    pg = record("a", 0, 0, "t").event
    assert pg is not None and truncate_position(pg) == "lsn 77"
    source = SourceInfo("mysql", "n", "db", SCHEMA.table, 5, file="bin.000003", pos=4411)
    assert truncate_position(ChangeEvent("t", source, None, None, 5)) == "binlog bin.000003:4411"


def test_sink_workers_are_stages_of_their_own() -> None:
    task = TaskConfig.model_validate({"name": "w", "target": {"workers": 3}})
    assert TaskRunner(task).stage_names == ("producer", "sink", "sink-2", "sink-3")
    assert TaskRunner(TaskConfig(name="one")).stage_names == ("producer", "sink")
    assert stage_kind("sink-2") == "sink" and stage_kind("producer") == "producer"


def test_status_shows_each_sink_and_each_stopped_table() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    status = TaskStatus(
        "w",
        "cdc",
        None,
        None,
        sinks=[
            SinkMember("headwater-w-sink", "/1", ["w.public.t[0]"]),
            SinkMember("headwater-w-sink-2", "/2", ["w.public.t[1]"]),
        ],
        stopped_tables=[StoppedTable("public.t", "column x changed type", at)],
    )
    console = Console(width=200, record=True)
    console.print(render(status))
    text = console.export_text()
    assert "sink workers 2" in text and "headwater-w-sink-2" in text and "w.public.t[1]" in text
    assert "stopped public.t" in text and "column x changed type" in text
    assert "1 table(s) stopped" in status.summary()
    data = status.to_json()
    assert data["stopped_tables"] == [
        {"table": "public.t", "reason": "column x changed type", "stopped_at": at.isoformat()}
    ]
    assert [m["client_id"] for m in data["sinks"]] == ["headwater-w-sink", "headwater-w-sink-2"]


def test_each_apply_attempt_gets_its_own_tables() -> None:
    kept, held = hold_truncates([record("a", 0, 1, "c", 1), record("a", 1, 2, "t")], lambda _: 3)
    batch = collapse(kept)
    add_held(batch, held)
    attempt = attempt_of(batch)
    # What settling a truncate does in an attempt that may roll back:
    attempt.tables[SCHEMA.table] = TableChanges(SCHEMA, truncated=True)
    assert not batch.tables[SCHEMA.table].truncated
    assert batch.tables[SCHEMA.table].changes  # a retry applies the changes again
