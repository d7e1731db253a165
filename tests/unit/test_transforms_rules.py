"""Every rule action of the transforms engine, on one source table and its change events:
selection (include/exclude/explicit, filters), naming, columns, masks, keys, expressions,
routing, DMS precedence, and the one-line errors for bad rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.envelope import ChangeEvent, Op, Row, SourceInfo
from schemas.tables import Column, TableId, TableSchema
from transforms.engine import MappingEngine, transform_event, transform_schema
from transforms.errors import TableMappingError
from transforms.load import parse_mappings, read_dms_json
from transforms.validate import check_mappings

CUSTOMERS = TableSchema(
    TableId("public", "customers"),
    (
        Column("id", "int4", "integer", nullable=False),
        Column("email", "text", "text"),
        Column("phone", "varchar", "character varying(20)"),
        Column("score", "numeric", "numeric(8,2)", precision=8, scale=2),
        Column("notes", "text", "text"),
        Column("created", "timestamptz", "timestamp with time zone"),
    ),
    ("id",),
)
ORDERS = TableSchema(
    TableId("public", "orders"),
    (
        Column("id", "int8", "bigint", nullable=False),
        Column("customer_id", "int4", "integer"),
        Column("status", "text", "text"),
        Column("notes", "text", "text"),
    ),
    ("id",),
)
AUDIT = TableSchema(
    TableId("public", "audit_log"), (Column("id", "int4", "integer", False),), ("id",)
)
TABLES = [CUSTOMERS, ORDERS, AUDIT]

ROW: Row = {
    "id": 7,
    "email": "ann@example.com",
    "phone": "+44 20 7946 0958",
    "score": Decimal("12.50"),
    "notes": "vip",
    "created": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
}


def include(table: str = "%", rule_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "rule-type": "selection",
        "rule-id": str(rule_id),
        "rule-name": str(rule_id),
        "object-locator": {"schema-name": "public", "table-name": table},
        "rule-action": "include",
        **extra,
    }


def column_rule(
    action: str, column: str, rule_id: Any = 2, table: Any = "customers", **extra: Any
) -> dict[str, Any]:
    return {
        "rule-type": "transformation",
        "rule-id": str(rule_id),
        "rule-target": "column",
        "object-locator": {"schema-name": "public", "table-name": table, "column-name": column},
        "rule-action": action,
        **extra,
    }


def table_rule(
    action: str, rule_id: Any = 2, table: Any = "customers", **extra: Any
) -> dict[str, Any]:
    return {
        "rule-type": "transformation",
        "rule-id": str(rule_id),
        "rule-target": "table",
        "object-locator": {"schema-name": "public", "table-name": table},
        "rule-action": action,
        **extra,
    }


def engine(*rules: dict[str, Any], salt: bytes = b"s") -> MappingEngine:
    mappings = parse_mappings({"rules": list(rules)})
    built = MappingEngine(mappings, salt)
    check_mappings(mappings, built, TABLES)
    return built


def event(
    op: Op, before: Row | None = None, after: Row | None = None, schema: TableSchema = CUSTOMERS
) -> ChangeEvent:
    source = SourceInfo("postgresql", "t", "db", schema.table, 1_700_000_000_000, lsn=0x16B3748)
    return ChangeEvent(op, source, before, after, 1)


def out_row(e: MappingEngine, row: Row = ROW, op: Op = "c") -> Row:
    result = transform_event(e, event(op, after=row), CUSTOMERS)
    assert result is not None and result.after is not None
    return result.after


# --- selection ---------------------------------------------------------------------------------


def test_include_exclude_and_explicit() -> None:
    e = engine(
        include("%"),
        {**include("audit[_]%", 2), "rule-action": "exclude"},
    )
    assert transform_schema(e, CUSTOMERS) is not None
    assert transform_schema(e, AUDIT) is None
    explicit = engine({**include("orders"), "rule-action": "explicit"})
    assert transform_schema(explicit, ORDERS) is not None
    assert transform_schema(explicit, CUSTOMERS) is None


def test_filters_or_within_and_across() -> None:
    status = {
        "column-name": "status",
        "filter-conditions": [
            {"filter-operator": "eq", "value": "paid"},
            {"filter-operator": "eq", "value": "shipped"},
        ],
    }
    ids = {
        "column-name": "id",
        "filter-conditions": [
            {"filter-operator": "between", "start-value": "10", "end-value": "20"}
        ],
    }
    e = engine(include("orders", filters=[status, ids]))

    def passes(row: Row) -> bool:
        return transform_event(e, event("c", after=row, schema=ORDERS), ORDERS) is not None

    assert passes({"id": 10, "status": "paid"})
    assert passes({"id": 20, "status": "shipped"})
    assert not passes({"id": 21, "status": "paid"})
    assert not passes({"id": 15, "status": "new"})
    assert not passes({"id": 15, "status": None})


@pytest.mark.parametrize(
    ("operator", "extra", "kept"),
    [
        ("eq", {"value": "5"}, [5]),
        ("noteq", {"value": "5"}, [1, 9]),
        ("lte", {"value": "5"}, [1, 5]),
        ("ste", {"value": "5"}, [1, 5]),
        ("gte", {"value": "5"}, [5, 9]),
        ("between", {"start-value": "2", "end-value": "5"}, [5]),
        ("notbetween", {"start-value": "2", "end-value": "5"}, [1, 9]),
        ("null", {}, [None]),
        ("notnull", {}, [1, 5, 9]),
    ],
)
def test_every_filter_operator(
    operator: str, extra: dict[str, str], kept: list[int | None]
) -> None:
    flt = {
        "column-name": "customer_id",
        "filter-conditions": [{"filter-operator": operator, **extra}],
    }
    e = engine(include("orders", filters=[flt]))
    passed = [
        v
        for v in (1, 5, 9, None)
        if transform_event(e, event("c", after={"id": 1, "customer_id": v}, schema=ORDERS), ORDERS)
    ]
    assert passed == kept


def test_update_leaving_the_filter_deletes_and_deletes_by_key_filter() -> None:
    flt = {
        "column-name": "status",
        "filter-conditions": [{"filter-operator": "eq", "value": "paid"}],
    }
    e = engine(include("orders", filters=[flt]))
    left = transform_event(e, event("u", after={"id": 3, "status": "new"}, schema=ORDERS), ORDERS)
    assert left is not None and left.op == "d" and left.before is not None
    assert left.key(e.plan(ORDERS).schema) == {"id": 3}  # type: ignore[union-attr]
    # A delete is passed when the filter reads non-key columns (the old values may be absent).
    gone = transform_event(e, event("d", before={"id": 3}, schema=ORDERS), ORDERS)
    assert gone is not None and gone.op == "d"
    by_key = engine(
        include(
            "orders",
            filters=[
                {
                    "column-name": "id",
                    "filter-conditions": [{"filter-operator": "gte", "value": "10"}],
                }
            ],
        )
    )
    assert transform_event(by_key, event("d", before={"id": 3}, schema=ORDERS), ORDERS) is None


# --- naming ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "extra", "expected"),
    [
        ("rename", {"value": "mail"}, "mail"),
        ("convert-uppercase", {}, "EMAIL"),
        ("convert-lowercase", {}, "email"),
        ("add-prefix", {"value": "c_"}, "c_email"),
        ("remove-prefix", {"value": "em"}, "ail"),
        ("replace-prefix", {"value": "E", "old-value": "em"}, "Eail"),
        ("add-suffix", {"value": "_x"}, "email_x"),
        ("remove-suffix", {"value": "ail"}, "em"),
        ("replace-suffix", {"value": "AIL", "old-value": "ail"}, "emAIL"),
    ],
)
def test_column_naming_actions(action: str, extra: dict[str, str], expected: str) -> None:
    e = engine(include(), column_rule(action, "email", **extra))
    schema = transform_schema(e, CUSTOMERS)
    assert schema is not None and expected in schema.column_names
    assert out_row(e)[expected] == ROW["email"]


def test_schema_and_table_naming() -> None:
    e = engine(
        include(),
        {
            "rule-type": "transformation",
            "rule-id": "2",
            "rule-target": "schema",
            "object-locator": {"schema-name": "public"},
            "rule-action": "rename",
            "value": "sales",
        },
        table_rule("convert-uppercase", 3),
    )
    schema = transform_schema(e, CUSTOMERS)
    assert schema is not None and schema.table == TableId("sales", "CUSTOMERS")
    assert transform_schema(e, ORDERS).table == TableId("sales", "orders")  # type: ignore[union-attr]


def test_lower_rule_id_wins_among_naming_rules() -> None:
    e = engine(
        include(),
        column_rule("rename", "email", 9, value="late"),
        column_rule("rename", "email", 3, value="early"),
    )
    assert "early" in transform_schema(e, CUSTOMERS).column_names  # type: ignore[union-attr]


# --- columns -----------------------------------------------------------------------------------


def test_remove_and_include_column() -> None:
    e = engine(include(), column_rule("remove-column", "notes"))
    assert "notes" not in out_row(e)
    only = engine(
        include(), column_rule("include-column", "id"), column_rule("include-column", "email", 3)
    )
    assert set(out_row(only)) == {"id", "email"}
    # An include beats a wildcard remove with a higher rule-id.
    mixed = engine(
        include(),
        column_rule("include-column", "email", 2),
        column_rule("include-column", "id", 3),
        column_rule("remove-column", "%", 4),
    )
    assert set(out_row(mixed)) == {"id", "email"}
    with pytest.raises(TableMappingError, match="without a primary key"):
        engine(include(), column_rule("remove-column", "id"))


def test_add_column_expression_and_headers() -> None:
    e = engine(
        include(),
        column_rule(
            "add-column",
            "",
            value="label",
            expression="$email || ':' || upper($notes)",
            **{"data-type": {"type": "string", "length": 50}},
        ),
        column_rule(
            "add-column",
            "",
            3,
            value="pos",
            expression="$AR_H_STREAM_POSITION",
            **{"data-type": {"type": "string"}},
        ),
        column_rule(
            "add-column",
            "",
            4,
            value="double_score",
            expression="$score * 2",
            **{"data-type": {"type": "numeric", "precision": 10, "scale": 2}},
        ),
    )
    row = out_row(e)
    assert row["label"] == "ann@example.com:VIP"
    assert row["pos"] == "0/16B3748"
    assert row["double_score"] == Decimal("25.00")
    schema = transform_schema(e, CUSTOMERS)
    assert schema is not None and schema.column("label").sql_type == "character varying(50)"


def test_operation_indicator_keeps_deleted_rows_flagged() -> None:
    e = engine(
        include(),
        column_rule(
            "add-column",
            "",
            value="op_flag",
            expression="operation_indicator('D', 'U', 'I')",
            **{"data-type": {"type": "string", "length": 1}},
        ),
    )
    assert out_row(e, op="c")["op_flag"] == "I"
    assert out_row(e, op="u")["op_flag"] == "U"
    assert out_row(e, op="r")["op_flag"] is None
    deleted = transform_event(e, event("d", before={"id": 7}), CUSTOMERS)
    assert deleted is not None and deleted.op == "u" and deleted.after is not None
    assert deleted.after["op_flag"] == "D" and deleted.after["id"] == 7
    assert "email" in deleted.unavailable  # the target keeps what the delete did not carry


def test_change_data_type() -> None:
    e = engine(
        include(), column_rule("change-data-type", "score", **{"data-type": {"type": "string"}})
    )
    assert out_row(e)["score"] == "12.50"
    assert transform_schema(e, CUSTOMERS).column("score").type_name == "text"  # type: ignore[union-attr]


def test_define_primary_key_and_renamed_key() -> None:
    e = engine(
        include(),
        column_rule("rename", "id", value="customer_id"),
        table_rule(
            "define-primary-key",
            3,
            **{"primary-key-def": {"name": "pk", "columns": ["customer_id", "email"]}},
        ),
    )
    schema = transform_schema(e, CUSTOMERS)
    assert schema is not None and schema.primary_key == ("customer_id", "email")
    out = transform_event(e, event("c", after=ROW), CUSTOMERS)
    assert out is not None and out.key(schema) == {"customer_id": 7, "email": "ann@example.com"}


def test_add_before_image_columns() -> None:
    e = engine(
        include(),
        column_rule(
            "add-before-image-columns",
            "%",
            **{"before-image-def": {"column-prefix": "BI_", "column-filter": "pk-only"}},
        ),
    )
    out = transform_event(e, event("u", before={**ROW, "id": 6}, after=ROW), CUSTOMERS)
    assert out is not None and out.after is not None and out.after["BI_id"] == 6
    assert "BI_email" not in out.after


# --- masks -------------------------------------------------------------------------------------


def test_dms_masks() -> None:
    digits = out_row(engine(include(), column_rule("data-masking-digits-mask", "phone")))["phone"]
    assert digits == "+## ## #### ####"
    randomized = out_row(engine(include(), column_rule("data-masking-digits-randomize", "phone")))[
        "phone"
    ]
    assert (
        randomized[0] == "+" and randomized != ROW["phone"] and len(randomized) == len(ROW["phone"])
    )
    hashed = out_row(engine(include(), column_rule("data-masking-hash-mask", "email")))["email"]
    assert len(hashed) == 64 and hashed != ROW["email"]


def test_headwater_masks() -> None:
    one = out_row(engine(include(), column_rule("mask-hash", "email"), salt=b"one"))["email"]
    two = out_row(engine(include(), column_rule("mask-hash", "email"), salt=b"two"))["email"]
    assert one != two and len(one) == 64  # the per-task salt changes the hash
    assert out_row(engine(include(), column_rule("mask-redact", "notes")))["notes"] == "REDACTED"
    assert (
        out_row(engine(include(), column_rule("mask-keep-last", "phone", value=4)))["phone"]
        == "************0958"
    )
    masked = engine(include(), column_rule("mask-hash", "score"))
    assert transform_schema(masked, CUSTOMERS).column("score").type_name == "text"  # type: ignore[union-attr]


# --- beyond DMS: row filter and routing --------------------------------------------------------


def test_filter_row_expression_and_route() -> None:
    e = engine(
        include(),
        table_rule("filter-row", expression="$score >= 10 and $email like '%@example.com'"),
        table_rule("route", 3, value="crm.customers"),
    )
    assert transform_event(e, event("c", after=ROW), CUSTOMERS) is not None
    assert transform_event(e, event("c", after={**ROW, "score": Decimal(1)}), CUSTOMERS) is None
    assert e.plan(CUSTOMERS).topic == "crm.customers"  # type: ignore[union-attr]


def test_truncate_passes() -> None:
    e = engine(include())
    assert transform_event(e, event("t"), CUSTOMERS) is not None


# --- bad rules: one line naming the rule and the fix -------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [include(), column_rule("explode", "email")],
            "rule 2 (rule-id 2): unknown rule-action 'explode'",
        ),
        (
            [include(), column_rule("rename", "emial", value="x")],
            "rule 2 (rule-id 2): rename names column public.customers.emial",
        ),
        ([include("custmers")], "rule 1 (rule-id 1): public.custmers selects no source table"),
        ([include(), table_rule("filter-row", expression="$id >")], "does not parse"),
        ([include(), table_rule("filter-row", expression="$nope = 1")], "expression reads $nope"),
        ([include(), table_rule("filter-row", expression="frob($id)")], "unknown function frob()"),
        (
            [
                include(),
                table_rule("define-primary-key", **{"primary-key-def": {"columns": ["zzz"]}}),
            ],
            "key column 'zzz'",
        ),
        ([include(), column_rule("rename", "email")], 'rename needs "value"'),
        ([{**include(), "rule-type": "selekt"}], "rule-type must be selection or transformation"),
        ([include("[ab")], "no closing ']'"),
        (
            [
                include(
                    filters=[
                        {
                            "column-name": "id",
                            "filter-conditions": [{"filter-operator": "eq", "value": "x"}],
                        }
                    ]
                )
            ],
            "filter value",
        ),
    ],
)
def test_bad_rules_fail_with_one_line(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(TableMappingError) as info:
        engine(*rules)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_dms_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"rules": [')
    with pytest.raises(TableMappingError, match="not valid JSON"):
        read_dms_json(path)


# --- the DMS example document ------------------------------------------------------------------


def test_dms_example_document_read_and_applied() -> None:
    path = Path(__file__).parents[2] / "examples" / "dms-table-mappings.json"
    mappings = read_dms_json(path)
    assert json.loads(path.read_text())["rules"][0]["rule-id"] == "1"
    e = MappingEngine(mappings, b"salt")
    schemas = check_mappings(mappings, e, TABLES)
    assert {str(s.table) for s in schemas} == {"sales.clients", "sales.orders"}
    clients = transform_schema(e, CUSTOMERS)
    assert (
        clients is not None
        and "mail" in clients.column_names
        and "notes" not in clients.column_names
    )
    mailed = transform_event(e, event("c", after=ROW), CUSTOMERS)
    assert mailed is not None and mailed.after is not None and len(mailed.after["mail"]) == 64
    order = {"id": 12, "customer_id": 7, "status": "paid", "notes": "x"}
    paid = transform_event(e, event("c", after=order, schema=ORDERS), ORDERS)
    assert paid is not None and paid.after == {
        "id": 12,
        "customer_id": 7,
        "status": "paid",
        "op_flag": "I",
    }
    assert transform_event(e, event("c", after={**order, "id": 3}, schema=ORDERS), ORDERS) is None
    assert transform_schema(e, AUDIT) is None


# --- the task file and topic naming ------------------------------------------------------------


def test_task_fields_and_topic_scheme(tmp_path: Path) -> None:
    import re

    from consumers.decode import is_change_topic, subscription_pattern
    from headwater.config import ConfigError, parse_task
    from transforms.load import task_mappings
    from transforms.records import is_raw_topic, raw_topic_pattern

    plain = parse_task({"name": "t1"})
    assert not plain.has_table_mappings and plain.sink_topic_prefix == "t1"
    inline = parse_task({"name": "t1", "table_mappings": {"rules": [include()]}})
    assert inline.sink_topic_prefix == "t1.transformed"
    assert task_mappings(inline) is not None
    path = Path(__file__).parents[2] / "examples" / "dms-table-mappings.json"
    from_file = parse_task({"name": "t1", "table_mappings_file": str(path)})
    assert task_mappings(from_file) == read_dms_json(path)
    with pytest.raises(ConfigError, match="not both"):
        parse_task({"name": "t1", "table_mappings": [include()], "table_mappings_file": "x"})
    # The transform stage reads raw topics only; the sink of a task with rules reads only
    # transformed ones, and a task without rules reads the raw ones as before.
    raw, out = "t1.public.orders", "t1.transformed.public.orders"
    assert re.match(raw_topic_pattern("t1"), raw) and not re.match(raw_topic_pattern("t1"), out)
    assert (
        is_raw_topic("t1", raw) and not is_raw_topic("t1", out) and not is_raw_topic("t1", "t1.dlq")
    )
    assert is_change_topic(inline.sink_topic_prefix, out)
    assert not is_change_topic(inline.sink_topic_prefix, raw)
    assert re.match(subscription_pattern(inline.sink_topic_prefix), out)
    assert not re.match(subscription_pattern(inline.sink_topic_prefix), raw)
    assert is_change_topic(plain.sink_topic_prefix, raw)
