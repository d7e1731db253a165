"""Reads table mappings: inline (`table_mappings:` in the task file, YAML) or an AWS DMS
table-mappings JSON document (`table_mappings_file:`), read as it is. Both become the same
`TableMappings`; any problem is one TableMappingError line naming the rule and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from headwater.config import TaskConfig
from transforms.engine import MappingEngine
from transforms.errors import TableMappingError, rule_label
from transforms.evaluate import compile_expression
from transforms.expression import ExpressionError
from transforms.rules import (
    ACTION_TARGETS,
    TRANSFORMATION_ACTIONS,
    IgnoredRule,
    Rule,
    SelectionRule,
    TableMappings,
    TransformationRule,
)
from transforms.wildcard import WildcardError, compile_wildcard

_RULE: TypeAdapter[SelectionRule | TransformationRule | IgnoredRule] = TypeAdapter(Rule)


def _explain(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).endswith("Rule"))
    if err["type"] == "missing":
        return f"{where or 'a field'} is missing; add it"
    if err["type"] == "union_tag_invalid":
        return "rule-type must be selection or transformation"
    if err["type"] == "union_tag_not_found":
        return 'rule-type is missing; add "rule-type": "selection" or "transformation"'
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def _check_transformation(rule: TransformationRule, label: str) -> None:
    action = rule.rule_action
    if action not in TRANSFORMATION_ACTIONS:
        known = ", ".join(sorted(TRANSFORMATION_ACTIONS))
        raise TableMappingError(f"{label}: unknown rule-action {action!r}; use one of {known}")
    if rule.rule_target not in ACTION_TARGETS[action]:
        allowed = " or ".join(sorted(ACTION_TARGETS[action]))
        raise TableMappingError(
            f"{label}: {action} needs rule-target {allowed}, not {rule.rule_target!r}"
        )
    needs = {
        "rename": rule.value,
        "add-prefix": rule.value,
        "add-suffix": rule.value,
        "remove-prefix": rule.value,
        "remove-suffix": rule.value,
        "replace-prefix": rule.old_value,
        "replace-suffix": rule.old_value,
        "add-column": rule.value,
        "route": rule.value,
        "filter-row": rule.expression,
        "define-primary-key": rule.primary_key_def,
        "change-data-type": rule.data_type,
        "mask-keep-last": rule.value,
    }
    if action in needs and needs[action] is None:
        field = {
            "filter-row": "expression",
            "define-primary-key": "primary-key-def",
            "change-data-type": "data-type",
            "replace-prefix": "old-value",
            "replace-suffix": "old-value",
        }.get(action, "value")
        raise TableMappingError(f'{label}: {action} needs "{field}"; add it')
    if action == "add-column" and (rule.expression is None or rule.data_type is None):
        raise TableMappingError(f'{label}: add-column needs "expression" and "data-type"')
    column = rule.object_locator.column_name
    if rule.rule_target == "column" and action != "add-column" and not column:
        raise TableMappingError(f"{label}: rule-target column needs object-locator.column-name")
    if rule.expression is not None:
        try:
            compile_expression(rule.expression)
        except ExpressionError as exc:
            raise TableMappingError(
                f"{label}: expression {rule.expression!r} does not parse: {exc}"
            ) from None


def _check_wildcards(rule: SelectionRule | TransformationRule, label: str) -> None:
    loc = rule.object_locator
    for pattern in (loc.schema_name, loc.table_name, loc.column_name):
        if pattern is None:
            continue
        try:
            compile_wildcard(pattern)
        except WildcardError as exc:
            raise TableMappingError(f"{label}: {exc}; close the bracket or write [[]") from None


def parse_mappings(document: Any, origin: str = "table mappings") -> TableMappings:
    """Validate a table-mappings document (`{"rules": [...]}` or a bare list of rules)."""
    raw = document.get("rules") if isinstance(document, dict) else document
    if not isinstance(raw, list) or not raw:
        raise TableMappingError(
            f'{origin}: expected {{"rules": [...]}} with at least one rule, as AWS DMS writes it'
        )
    rules: list[SelectionRule | TransformationRule] = []
    seen: dict[tuple[str, int], int] = {}
    for position, item in enumerate(raw, start=1):
        rule_id = item.get("rule-id", item.get("rule_id")) if isinstance(item, dict) else None
        label = f"{origin}: {rule_label(position, rule_id)}"
        try:
            rule = _RULE.validate_python(item)
        except ValidationError as exc:
            raise TableMappingError(f"{label}: {_explain(exc)}") from None
        if isinstance(rule, IgnoredRule):
            continue
        if isinstance(rule, TransformationRule):
            _check_transformation(rule, label)
        _check_wildcards(rule, label)
        key = (rule.rule_type, rule.rule_id)
        if key in seen:
            raise TableMappingError(
                f"{label}: rule-id {rule.rule_id} is also used by rule {seen[key]}; "
                "give each rule its own rule-id"
            )
        seen[key] = position
        rules.append(rule)
    if not any(isinstance(r, SelectionRule) and r.rule_action != "exclude" for r in rules):
        raise TableMappingError(
            f"{origin}: no selection rule includes a table; add a selection rule with "
            "rule-action include (DMS moves nothing without one)"
        )
    return TableMappings(rules=tuple(rules))


def read_dms_json(path: Path) -> TableMappings:
    """Read an AWS DMS table-mappings JSON file as it is."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TableMappingError(
            f"cannot read table_mappings_file {path}: {exc.strerror}; fix the path"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TableMappingError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix the document"
        ) from None
    return parse_mappings(document, str(path))


def task_mappings(task: TaskConfig) -> TableMappings | None:
    """The task's table mappings, or None when it has none."""
    if task.table_mappings_file is not None:
        return read_dms_json(Path(task.table_mappings_file))
    if task.table_mappings is not None:
        return parse_mappings(task.table_mappings, "table_mappings")
    return None


def masking_salt(task: TaskConfig) -> bytes:
    """The per-task salt of keyed masks: HEADWATER_MASKING_SALT if set (do set it: the
    default, derived from the task name, is no secret), else `headwater:<task>`."""
    return os.environ.get("HEADWATER_MASKING_SALT", f"headwater:{task.name}").encode()


def task_engine(task: TaskConfig) -> MappingEngine | None:
    """The compiled rules of `task`, or None when it has no table mappings."""
    mappings = task_mappings(task)
    return MappingEngine(mappings, masking_salt(task)) if mappings is not None else None
