"""Table and column descriptions shared by every stage: what a producer reads from a source
catalog and a sink needs to create and write a target table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class TableId:
    """A source table, by schema (or MySQL database) and name."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def parse(cls, qualified: str) -> TableId:
        """Read `schema.table`; a bare name means the `public` schema."""
        schema, _, name = qualified.rpartition(".")
        return cls(schema or "public", name)


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, the source's own type and the base type that picks the mapping.

    `sql_type` is the full declared type (`numeric(12,2)`, `character varying(40)`), used to
    create a same-engine target exactly; `type_name` is the engine's base type name (`numeric`,
    `varchar`), used to choose the Avro type and the value parser.
    """

    name: str
    type_name: str
    sql_type: str
    nullable: bool = True
    precision: int | None = None
    scale: int | None = None


@dataclass(frozen=True, slots=True)
class TableSchema:
    """The columns of a table in source order, and which of them form the primary key."""

    table: TableId
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    engine: str = "postgres"

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.table} has no column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key_columns(self) -> tuple[Column, ...]:
        return tuple(self.column(n) for n in self.primary_key)
