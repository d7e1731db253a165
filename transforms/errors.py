"""Errors of the transform stage. `TableMappingError` is a user's mistake in the rules: its
message is one line naming the rule (by rule-id or position) and the fix."""

from __future__ import annotations


class TableMappingError(ValueError):
    """Table mappings that cannot be used."""


class TransformError(RuntimeError):
    """A record the rules cannot be applied to (e.g. an expression failing on its values)."""


def rule_label(position: int, rule_id: object = None) -> str:
    """`rule 3 (rule-id 7)`: how every message names a rule."""
    return f"rule {position}" + (f" (rule-id {rule_id})" if rule_id is not None else "")
