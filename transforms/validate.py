"""Checks table mappings against the source's tables before a task starts: every rule must
find the schema, table or column it names, every wildcard must select something, filter
values must read as their column's type, and every expression must name real columns."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.tables import TableSchema
from transforms.engine import MappingEngine
from transforms.errors import TableMappingError, TransformError, rule_label
from transforms.expression import column_refs, parse
from transforms.filters import filter_predicate
from transforms.naming import locates_column, locates_table
from transforms.rules import SelectionRule, TableMappings, TransformationRule
from transforms.types import dms_column


def _label(mappings: TableMappings, rule: SelectionRule | TransformationRule) -> str:
    return rule_label(mappings.rules.index(rule) + 1, rule.rule_id)


def _locator(rule: SelectionRule | TransformationRule) -> str:
    loc = rule.object_locator
    parts = [loc.schema_name, loc.table_name]
    if isinstance(rule, TransformationRule) and rule.rule_target == "column":
        parts.append(loc.column_name or "")
    return ".".join(parts)


def _check_selection(
    mappings: TableMappings, rule: SelectionRule, tables: Sequence[TableSchema]
) -> None:
    label = _label(mappings, rule)
    found = [t for t in tables if locates_table(rule, t.table)]
    if not found:
        names = ", ".join(str(t.table) for t in tables[:8]) or "none"
        raise TableMappingError(
            f"{label}: {_locator(rule)} selects no source table (tables: {names}); "
            "fix schema-name/table-name (wildcards: % _ [ab] [a-d])"
        )
    for schema in found:
        by_name = {c.name: c for c in schema.columns}
        for flt in rule.filters:
            if flt.column_name not in by_name:
                raise TableMappingError(
                    f"{label}: filter column {flt.column_name!r} is not in {schema.table}; "
                    f"use one of {', '.join(by_name)}"
                )
            try:
                filter_predicate(flt, by_name[flt.column_name])
            except TransformError as exc:
                raise TableMappingError(f"{label}: filter value: {exc}; fix the value") from None


def _check_transformation(
    mappings: TableMappings, rule: TransformationRule, tables: Sequence[TableSchema]
) -> None:
    label = _label(mappings, rule)
    found = [t for t in tables if locates_table(rule, t.table)]
    if rule.rule_target == "column" and rule.rule_action != "add-column":
        hits = [c for t in found for c in t.columns if locates_column(rule, t.table, c.name)]
        if not hits:
            raise TableMappingError(
                f"{label}: {rule.rule_action} names column {_locator(rule)}, which no selected "
                "table has; fix object-locator.column-name"
            )
    if not found:
        raise TableMappingError(
            f"{label}: {rule.rule_action} names {_locator(rule)}, which matches no selected "
            "table; fix object-locator"
        )
    if rule.data_type is not None:
        try:
            dms_column("x", rule.data_type)
        except ValueError as exc:
            raise TableMappingError(f"{label}: {exc}") from None
    if rule.expression is not None:
        refs = {r for r in column_refs(parse(rule.expression)) if not r.startswith("AR_H_")}
        for schema in found:
            missing = sorted(refs - set(schema.column_names))
            if missing:
                raise TableMappingError(
                    f"{label}: expression reads ${missing[0]}, which {schema.table} does not "
                    f"have; use one of {', '.join(schema.column_names)}"
                )


def check_mappings(
    mappings: TableMappings, engine: MappingEngine, tables: Sequence[TableSchema]
) -> list[TableSchema]:
    """Raise TableMappingError on the first rule that does not fit the source `tables`;
    return the transformed schemas of the selected tables."""
    for rule in mappings.rules:
        if isinstance(rule, SelectionRule):
            _check_selection(mappings, rule, tables)
    selected = [t for t in tables if engine.selection(t.table)]
    for rule in mappings.transformations:
        _check_transformation(mappings, rule, selected)
    out = []
    for schema in selected:
        plan = engine.plan(schema)
        assert plan is not None
        names = set(plan.schema.column_names)
        key_rule = next(
            (
                r
                for r in sorted(mappings.transformations, key=lambda r: r.rule_id)
                if r.rule_action == "define-primary-key" and locates_table(r, schema.table)
            ),
            None,
        )
        missing = [k for k in plan.schema.primary_key if k not in names]
        if missing:
            where = _label(mappings, key_rule) if key_rule else f"table {schema.table}"
            raise TableMappingError(
                f"{where}: key column {missing[0]!r} is not in the transformed "
                f"{plan.schema.table} (columns: {', '.join(sorted(names))}); keep key columns "
                "or name existing ones in primary-key-def"
            )
        if not plan.schema.primary_key:
            raise TableMappingError(
                f"table {schema.table}: the rules leave it without a primary key; "
                "add a define-primary-key rule"
            )
        out.append(plan.schema)
    return out
