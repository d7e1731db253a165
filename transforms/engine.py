"""The rules engine: pure functions from a source table schema to the transformed schema
(None when the table is not selected), and from a change event to the transformed event
(None when a filter drops it). No Kafka here; the processor feeds it.

Row filters (DMS filters and `filter-row` expressions) keep the target equal to the rows that
pass: an update whose new values fail becomes a delete of the row; a delete is dropped only
when its filter reads key columns alone (otherwise the old values may be absent, and
deleting a row that is not there is harmless)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from schemas.envelope import ChangeEvent, Row
from schemas.tables import Column, TableId, TableSchema
from transforms import masking
from transforms.evaluate import Compiled, compile_expression
from transforms.expression import column_refs, parse
from transforms.filters import all_filters
from transforms.naming import locates_column, locates_table, rename, winners
from transforms.rules import SelectionRule, TableMappings, TransformationRule
from transforms.types import convert_value, dms_column

ValueFn = Callable[[Row, ChangeEvent | None], Any]
_LOB_TYPES = frozenset({"text", "bytea", "json", "jsonb", "xml"})


@dataclass(frozen=True)
class TablePlan:
    """How one source table is transformed: its output schema, where its events go, and
    how each output column is computed from a source row."""

    source: TableSchema
    schema: TableSchema
    topic: str | None  # a `route` rule's topic, else the default naming
    outputs: tuple[tuple[str, ValueFn], ...]
    row_filter: Callable[[Row, ChangeEvent | None], bool] | None = None
    filter_reads_key_only: bool = True
    soft_delete: bool = False
    renamed: dict[str, str] = field(default_factory=dict)

    def row(self, row: Row, event: ChangeEvent | None) -> Row:
        return {name: fn(row, event) for name, fn in self.outputs}

    def apply(self, event: ChangeEvent) -> ChangeEvent | None:
        """The transformed event, or None when the row filter drops it."""
        if event.op == "t":
            return event
        if event.op == "d":
            return self._delete(event)
        assert event.after is not None
        after = self.row(event.after, event)
        before = self.row(event.before, event) if event.before is not None else None
        unavailable = tuple(self.renamed[c] for c in event.unavailable if c in self.renamed)
        if self.row_filter is not None and not self.row_filter(event.after, event):
            if event.op != "u":
                return None
            # The row left the filter: remove it from the target (a no-op if never there).
            return replace(event, op="d", before=after, after=None, unavailable=())
        return replace(event, before=before, after=after, unavailable=unavailable)

    def _delete(self, event: ChangeEvent) -> ChangeEvent | None:
        assert event.before is not None
        old = event.before
        keyed = self.row_filter is not None and self.filter_reads_key_only
        if keyed and self.row_filter is not None and not self.row_filter(old, event):
            return None
        before = self.row(old, event)
        if not self.soft_delete:
            return replace(event, before=before, after=None, unavailable=())
        # operation_indicator(): the row stays, flagged; columns the delete did not carry
        # (REPLICA IDENTITY DEFAULT sends only the key) keep their target values.
        missing = {
            self.renamed[c]
            for c in self.source.column_names
            if c not in self.source.primary_key and old.get(c) is None and c in self.renamed
        }
        return replace(event, op="u", before=None, after=before, unavailable=tuple(missing))


class MappingEngine:
    """Compiled table mappings; `plan` is cached per source schema."""

    def __init__(self, mappings: TableMappings, salt: bytes = b"") -> None:
        self.mappings = mappings
        self.salt = salt
        self.plan = lru_cache(maxsize=1024)(self._plan)

    def selection(self, table: TableId) -> list[SelectionRule]:
        """The include/explicit rules selecting `table` (empty when it is not selected)."""
        rules = [r for r in self.mappings.selection if locates_table(r, table)]
        if any(r.rule_action == "exclude" for r in rules):
            return []
        return rules

    def _rules_for(self, table: TableId, target: str) -> list[TransformationRule]:
        return [
            r
            for r in self.mappings.transformations
            if r.rule_target == target and locates_table(r, table)
        ]

    def output_table(self, table: TableId) -> TableId:
        """The table's name after schema and table naming rules."""
        schema_rule = winners(self._rules_for(table, "schema")).get("name")
        table_rule = winners(self._rules_for(table, "table")).get("name")
        return TableId(rename(table.schema, schema_rule), rename(table.name, table_rule))

    def _plan(self, source: TableSchema) -> TablePlan | None:
        selecting = self.selection(source.table)
        if not selecting:
            return None
        table_rules = winners(self._rules_for(source.table, "table"))
        column_rules = self._rules_for(source.table, "column")
        columns: list[Column] = []
        outputs: list[tuple[str, ValueFn]] = []
        renamed: dict[str, str] = {}
        includes = any(r.rule_action == "include-column" for r in column_rules)
        for col in source.columns:
            chosen = winners(r for r in column_rules if locates_column(r, source.table, col.name))
            presence = chosen.get("presence")
            kept = presence.rule_action == "include-column" if presence else not includes
            if not kept:
                continue
            out = self._column(col, chosen)
            renamed[col.name] = out.name
            columns.append(out)
            outputs.append((out.name, self._value_fn(col, out, chosen)))
        soft_delete = False
        for rule in sorted(column_rules, key=lambda r: r.rule_id):
            taken = {c.name for c in columns}
            if rule.rule_action == "add-column" and rule.text_value not in taken:
                assert rule.data_type is not None and rule.expression is not None
                col = dms_column(rule.text_value, rule.data_type)
                compiled = compile_expression(rule.expression)
                columns.append(col)
                outputs.append((col.name, _converted(compiled, col)))
                soft_delete = soft_delete or "operation_indicator" in rule.expression
            elif rule.rule_action == "add-before-image-columns":
                self._before_image(source, rule, columns, outputs)
        key = self._key(source, table_rules.get("define-primary-key"), renamed)
        row_filter, key_only = self._row_filter(source, selecting, table_rules.get("filter-row"))
        route = table_rules.get("route")
        schema = TableSchema(self.output_table(source.table), tuple(columns), key, source.engine)
        return TablePlan(
            source,
            schema,
            route.text_value if route else None,
            tuple(outputs),
            row_filter,
            key_only,
            soft_delete,
            renamed,
        )

    def _column(self, col: Column, chosen: dict[str, TransformationRule]) -> Column:
        name = rename(col.name, chosen.get("name"))
        if "change-data-type" in chosen:
            spec = chosen["change-data-type"].data_type
            assert spec is not None
            return replace(dms_column(name, spec, col.nullable))
        if "mask" in chosen:
            return Column(name, "text", "text", col.nullable)
        return replace(col, name=name)

    def _value_fn(self, col: Column, out: Column, chosen: dict[str, TransformationRule]) -> ValueFn:
        name = col.name
        mask_rule = chosen.get("mask")
        if mask_rule is not None:
            mask = self._mask(mask_rule)
            return lambda row, ev: mask(row.get(name))
        if "change-data-type" in chosen:
            return lambda row, ev: convert_value(row.get(name), out)
        return lambda row, ev: row.get(name)

    def _mask(self, rule: TransformationRule) -> masking.Mask:
        action, value = rule.rule_action, rule.value
        if action == "data-masking-digits-mask":
            return masking.digits_mask(str(value)[:1] if value else "#")
        if action == "data-masking-digits-randomize":
            return masking.digits_randomize(self.salt)
        if action == "data-masking-hash-mask":
            return masking.sha256_mask()
        if action == "mask-hash":
            return masking.keyed_hash(self.salt)
        if action == "mask-redact":
            return masking.redact(None if value is None else str(value))
        return masking.keep_last(int(value or 0))

    def _before_image(
        self,
        source: TableSchema,
        rule: TransformationRule,
        columns: list[Column],
        outputs: list[tuple[str, ValueFn]],
    ) -> None:
        spec = rule.before_image_def
        prefix = spec.column_prefix if spec else "BI_"
        suffix = spec.column_suffix if spec else ""
        which = spec.column_filter if spec else "pk-only"
        for col in source.columns:
            if not locates_column(rule, source.table, col.name):
                continue
            if which == "pk-only" and col.name not in source.primary_key:
                continue
            if which == "non-lob" and col.type_name in _LOB_TYPES:
                continue
            out = replace(col, name=f"{prefix}{col.name}{suffix}", nullable=True)
            columns.append(out)
            outputs.append((out.name, _before_value(col.name)))

    def _key(
        self, source: TableSchema, rule: TransformationRule | None, renamed: dict[str, str]
    ) -> tuple[str, ...]:
        if rule is not None and rule.primary_key_def is not None:
            # The columns are named as in the target (after renames), as in DMS.
            return tuple(rule.primary_key_def.columns)
        return tuple(renamed[c] for c in source.primary_key if c in renamed)

    def _row_filter(
        self,
        source: TableSchema,
        selecting: list[SelectionRule],
        expression_rule: TransformationRule | None,
    ) -> tuple[Callable[[Row, ChangeEvent | None], bool] | None, bool]:
        by_name = {c.name: c for c in source.columns}
        filters = [f for r in selecting for f in r.filters]
        dms = all_filters(filters, by_name)
        read = {f.column_name for f in filters}
        expr: Compiled | None = None
        if expression_rule is not None and expression_rule.expression is not None:
            expr = compile_expression(expression_rule.expression)
            read |= column_refs(parse(expression_rule.expression))
        key_only = read <= set(source.primary_key)
        if dms is None and expr is None:
            return None, True

        def keep(row: Row, event: ChangeEvent | None) -> bool:
            if dms is not None and not dms(row):
                return False
            return expr is None or expr(row, event) is True

        return keep, key_only


def _before_value(name: str) -> ValueFn:
    return lambda row, ev: ev.before.get(name) if ev is not None and ev.before else None


def _converted(compiled: Compiled, col: Column) -> ValueFn:
    return lambda row, ev: convert_value(compiled(row, ev), col)


def transform_schema(engine: MappingEngine, schema: TableSchema) -> TableSchema | None:
    """The transformed schema of a source table; None when the rules do not select it."""
    plan = engine.plan(schema)
    return plan.schema if plan else None


def transform_event(
    engine: MappingEngine, event: ChangeEvent, schema: TableSchema
) -> ChangeEvent | None:
    """The transformed event (`schema` is the event's source schema); None when the table is
    not selected or a filter drops the event."""
    plan = engine.plan(schema)
    return plan.apply(event) if plan else None
