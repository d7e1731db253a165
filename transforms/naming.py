"""Which rules apply to a schema, table or column, and the DMS precedence among them: one
action of a kind per object, the lowest rule-id winning among rules of the same kind."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.tables import TableId
from transforms.rules import (
    DMS_MASKS,
    HEADWATER_MASKS,
    NAMING_ACTIONS,
    SelectionRule,
    TransformationRule,
)
from transforms.wildcard import matches


def action_kind(rule: TransformationRule) -> str:
    """Rules of one kind compete for an object; rules of different kinds all apply."""
    action = rule.rule_action
    if action in NAMING_ACTIONS:
        return "name"
    if action in ("remove-column", "include-column"):
        return "presence"
    if action in DMS_MASKS or action in HEADWATER_MASKS:
        return "mask"
    if action == "add-column":
        return f"add-column:{rule.text_value}"
    return action


def locates_table(rule: SelectionRule | TransformationRule, table: TableId) -> bool:
    loc = rule.object_locator
    if isinstance(rule, SelectionRule) and rule.rule_action == "explicit":
        return loc.schema_name == table.schema and loc.table_name == table.name
    return matches(loc.schema_name, table.schema) and matches(loc.table_name, table.name)


def locates_column(rule: TransformationRule, table: TableId, column: str) -> bool:
    pattern = rule.object_locator.column_name
    return locates_table(rule, table) and pattern is not None and matches(pattern, column)


def winners(rules: Iterable[TransformationRule]) -> dict[str, TransformationRule]:
    """The rule of each kind that applies: the lowest rule-id."""
    chosen: dict[str, TransformationRule] = {}
    for rule in rules:
        kind = action_kind(rule)
        if kind not in chosen or rule.rule_id < chosen[kind].rule_id:
            chosen[kind] = rule
    return chosen


def rename(name: str, rule: TransformationRule | None) -> str:
    """`name` after a naming rule (unchanged when `rule` is None or does not apply)."""
    if rule is None:
        return name
    action, value, old = rule.rule_action, rule.text_value, rule.old_value or ""
    if action == "rename":
        return value
    if action == "convert-lowercase":
        return name.lower()
    if action == "convert-uppercase":
        return name.upper()
    if action == "add-prefix":
        return value + name
    if action == "add-suffix":
        return name + value
    if action == "remove-prefix":
        return name[len(value) :] if value and name.startswith(value) else name
    if action == "remove-suffix":
        return name[: -len(value)] if value and name.endswith(value) else name
    if action == "replace-prefix":
        return value + name[len(old) :] if name.startswith(old) else name
    if action == "replace-suffix":
        return name[: -len(old)] + value if old and name.endswith(old) else name
    return name
