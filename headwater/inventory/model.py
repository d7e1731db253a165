"""Engine-neutral description of what a source table carries besides its columns' types:
defaults, identity, generated columns, enum labels, indexes, check constraints, foreign keys
and triggers; and the views and routines of the source schemas. Expressions stay in the
source engine's SQL text: translating them is convert's job."""

from __future__ import annotations

from dataclasses import dataclass, field

from headwater.inventory.foreign_keys import ForeignKey
from schemas.tables import TableSchema


@dataclass(frozen=True)
class ColumnExtras:
    default: str | None = None  # the source's default expression, as SQL text
    auto_increment: bool = False  # serial / identity / AUTO_INCREMENT
    generated: str | None = None  # a generated column's expression
    enum_labels: tuple[str, ...] = ()  # the allowed values of an enum column
    on_update: str | None = None  # MySQL's ON UPDATE CURRENT_TIMESTAMP


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]  # empty when any part is an expression
    unique: bool
    constraint: bool  # a UNIQUE constraint rather than a bare index
    method: str = "btree"
    predicate: str | None = None  # a partial index's WHERE
    definition: str = ""  # the source's own statement, for the report
    prefixed: bool = False  # MySQL prefix index (col(n))


@dataclass(frozen=True)
class Check:
    name: str
    expression: str  # without the CHECK keyword


@dataclass
class TableInventory:
    schema: TableSchema
    extras: dict[str, ColumnExtras] = field(default_factory=dict)
    indexes: list[Index] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)

    def extra(self, column: str) -> ColumnExtras:
        return self.extras.get(column, ColumnExtras())


@dataclass
class SchemaObjects:
    """Objects of the source schemas that belong to no single table."""

    views: list[str] = field(default_factory=list)
    routines: list[str] = field(default_factory=list)  # functions and procedures
