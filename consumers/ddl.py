"""Target DDL from a table's Avro-carried description: which column type a target gets for a
source column, and the CREATE SCHEMA / CREATE TABLE / ADD COLUMN statements, for PostgreSQL
targets (MySQL/MariaDB and SQLite: consumers/mysql_target.py, sqlite_target.py, sql_tables.py).

A PostgreSQL source's declared type (`format_type` output such as `numeric(12,2)`) is used
verbatim, so a same-engine target is exact; other sources map by base type name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from psycopg import sql

from consumers.sql_dialect import mysql_base_type
from schemas.tables import Column, TableId, TableSchema

# What `format_type` can print: words, digits, spaces, (typmods), [arrays], "quoted", dots.
_SAFE_TYPE = re.compile(r'^[A-Za-z_][A-Za-z0-9_ ,.()\[\]"]*$')

FALLBACK_TYPE = "text"
"""The type of a column whose source type the target does not know (values travel as text)."""

# The PostgreSQL base type names of consumers.sql_dialect.mysql_base_type (the one mapping from
# MySQL/MariaDB names) that a CREATE TABLE writes otherwise; the others are written as they are.
_DDL_NAMES: dict[str, str] = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bpchar": "text",
    "varchar": "text",
    "json": "jsonb",
    "timestamptz": "timestamp with time zone",
}


class DdlError(ValueError):
    """A column type that cannot be put into a DDL statement as it is."""


def postgres_column_type(col: Column, source_engine: str) -> str:
    """The PostgreSQL type a target column gets for source column `col`."""
    if source_engine == "postgres":
        return col.sql_type
    if col.type_name == "decimal" and col.precision is not None:
        return f"numeric({col.precision},{col.scale or 0})"
    if col.type_name.lower() == "bigint" and "unsigned" in col.sql_type.lower():
        return "numeric(20,0)"  # the next wider type past bigint
    base = mysql_base_type(col)
    return _DDL_NAMES.get(base, base)


def _type_sql(type_text: str) -> sql.SQL:
    if not _SAFE_TYPE.match(type_text) or "--" in type_text:
        raise DdlError(f"column type {type_text!r} is not a plain type name")
    return sql.SQL(type_text)


def column_definition(col: Column, type_text: str, with_not_null: bool) -> sql.Composed:
    """`name type [NOT NULL]`."""
    not_null = sql.SQL(" NOT NULL") if with_not_null and not col.nullable else sql.SQL("")
    return sql.SQL("{} {}{}").format(sql.Identifier(col.name), _type_sql(type_text), not_null)


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def qualified(table: TableId) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def create_table(target: TableId, schema: TableSchema, types: Mapping[str, str]) -> sql.Composed:
    """CREATE TABLE with the source's columns, nullability and primary key; `types` maps
    each column name to its target type."""
    parts = [column_definition(c, types[c.name], with_not_null=True) for c in schema.columns]
    if schema.primary_key:
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in schema.primary_key)
        parts.append(sql.SQL("PRIMARY KEY ({})").format(keys))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        qualified(target), sql.SQL(", ").join(parts)
    )


def add_column(target: TableId, col: Column, type_text: str) -> sql.Composed:
    """ADD COLUMN for a column a later schema version brought; always nullable, since the
    rows already in the target have no value for it."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}").format(
        qualified(target), column_definition(col, type_text, with_not_null=False)
    )


def widen_column(target: TableId, column: str, type_text: str) -> sql.Composed:
    """ALTER COLUMN ... TYPE for a column whose source type widened (consumers/type_watch)."""
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
        qualified(target), sql.Identifier(column), sql.SQL(type_text)
    )
