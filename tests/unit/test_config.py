"""Task files validate, default to the local stack, and fail with the field and fix named."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.config import ConfigError, load_task, parse_task
from schemas.tables import TableId

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_minimal_task_gets_local_stack_defaults() -> None:
    task = parse_task({"name": "orders-move"})
    assert task.mode == "full-load-and-cdc"
    assert task.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert task.registry.url.endswith("/apis/ccompat/v7")
    assert task.topic_prefix == "orders-move"
    assert task.slot_name == "headwater_orders_move"
    assert task.sink_group == "headwater-orders-move-sink"


def test_examples_parse() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        assert load_task(path).name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "t", "sorce": {}}, "sorce: unknown field"),
        ({"mode": "cdc"}, "name: required field is missing"),
        ({"name": "t", "mode": "full"}, "mode: Input should be 'full-load'"),
        ({"name": "t", "tables": {"include": ["orders"]}}, "must be schema.table"),
        ({"name": "t", "target": {"engine": "oracle"}}, "target.engine"),
        ({"name": "bad name"}, "name: Value error, use letters"),
        ({"name": "t", "target": {"batch_size": 0}}, "target.batch_size"),
        ({"name": "t", "transform": {"engine": "spark"}}, "transform.engine: Input should be"),
    ],
)
def test_bad_fields_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_task(data)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read task file"):
        load_task(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_task(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        load_task(bad)


def test_table_selection() -> None:
    sel = parse_task(
        {
            "name": "t",
            "tables": {"include": ["public.*", "sales.order?"], "exclude": ["public.tmp_*"]},
        }
    ).tables
    assert sel.selects(TableId("public", "orders"))
    assert not sel.selects(TableId("public", "tmp_x"))
    assert sel.selects(TableId("sales", "orders"))
    assert not sel.selects(TableId("sales", "orders_2024"))


def test_transform_workers_become_stages_only_with_table_mappings() -> None:
    from headwater.runner import TaskRunner

    rules = {
        "rules": [
            {
                "rule-type": "selection",
                "rule-id": "1",
                "rule-name": "all",
                "object-locator": {"schema-name": "public", "table-name": "%"},
                "rule-action": "include",
            }
        ]
    }
    task = parse_task({"name": "t", "transform": {"engine": "confluent", "workers": 3}})
    assert TaskRunner(task).stage_names == ("producer", "sink")
    task = parse_task({"name": "t", "transform": {"workers": 2}, "table_mappings": rules})
    assert task.transform.engine == "faust"
    assert TaskRunner(task).stage_names == ("producer", "transform", "transform-2", "sink")
