"""The canonical text of a value, as a SQL expression per engine and type: the one place
that says how a PostgreSQL value and the MySQL/MariaDB value the sink stores for it
(docs/type-mapping.md) are made comparable, so row checksums computed in each database
agree when the rows do.

Same engine on both sides: the engine's own text form of every column (exact). Across
engines, by the source column's base type in PostgreSQL's vocabulary
(`consumers.sql_dialect.base_type`):

| type | canonical text |
|---|---|
| integers, numeric/DECIMAL | decimal digits as the engine prints them (the scale kept) |
| float4/float8 | rounded to 4 decimal places (FLOAT/DOUBLE print differently) |
| bool vs TINYINT(1) | `1` / `0` |
| timestamptz vs DATETIME(6) in UTC, timestamp | `YYYY-MM-DD HH:MM:SS.ffffff` in UTC |
| date / time | `YYYY-MM-DD` / `HH:MM:SS.ffffff` |
| bytea vs BLOB/VARBINARY | lower-case hex |
| uuid vs CHAR(36) | lower-case text |
| json/jsonb vs JSON/LONGTEXT | the stored text (jsonb's normal form on PostgreSQL) |
| anything else | the engine's text cast |

NULL becomes a marker no text value of a row takes in practice (`\\N`), so NULL and ''
differ. Sessions run in UTC (headwater.databases).
"""

from __future__ import annotations

from consumers.sql_dialect import base_type
from schemas.tables import Column

NULL_MARK = "\\N"
SEPARATOR_CODE = 31  # ASCII unit separator between the columns of a row

_PG: dict[str, str] = {
    "bool": "{c}::int::text",
    "float4": "round({c}::numeric, 4)::text",
    "float8": "round({c}::numeric, 4)::text",
    "timestamptz": "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    "timestamp": "to_char({c}, 'YYYY-MM-DD HH24:MI:SS.US')",
    "date": "to_char({c}, 'YYYY-MM-DD')",
    "time": "to_char(date '2000-01-01' + {c}, 'HH24:MI:SS.US')",
    "bytea": "encode({c}, 'hex')",
    "uuid": "{c}::text",
    "jsonb": "{c}::text",
}

_MY: dict[str, str] = {
    "bool": "CAST({c} AS CHAR)",
    "float4": "CAST(CAST({c} AS DECIMAL(65,4)) AS CHAR)",
    "float8": "CAST(CAST({c} AS DECIMAL(65,4)) AS CHAR)",
    "timestamptz": "DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')",
    "timestamp": "DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')",
    "date": "DATE_FORMAT({c}, '%Y-%m-%d')",
    "time": "TIME_FORMAT({c}, '%H:%i:%s.%f')",
    "bytea": "LOWER(HEX({c}))",
    "uuid": "LOWER({c})",
}


def value_text(engine: str, col: Column, quoted: str, source_engine: str, exact: bool) -> str:
    """SQL giving the canonical text of column `col` (already quoted as `quoted`) in a
    database of `engine`; `exact` when source and target are the same engine."""
    if engine == "postgres":
        if exact:
            return f"{quoted}::text"
        template = _PG.get(base_type(col, source_engine), "{c}::text")
        return template.format(c=quoted)
    if exact:
        binary = col.type_name.lower() in _MY_BINARY
        return f"LOWER(HEX({quoted}))" if binary else f"CAST({quoted} AS CHAR)"
    template = _MY.get(base_type(col, source_engine), "CAST({c} AS CHAR)")
    return template.format(c=quoted)


_MY_BINARY = frozenset(["binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit"])


def escape_colons(sql_text: str) -> str:
    """Literal colons (PostgreSQL's `HH24:MI`) escaped for sqlalchemy.text, which would take
    `:MI` for a bound parameter."""
    return sql_text.replace(":", "\\:")


def row_text(engine: str, texts: list[str]) -> str:
    """SQL joining column texts into one string, NULLs marked."""
    if engine == "postgres":
        marked = [f"coalesce({t}, E'\\\\N')" for t in texts]
        return f"concat_ws(chr({SEPARATOR_CODE}), {', '.join(marked)})"
    marked = [f"COALESCE({t}, '\\\\N')" for t in texts]
    return f"CONCAT_WS(CHAR({SEPARATOR_CODE}), {', '.join(marked)})"


def row_hash(engine: str, text_sql: str) -> str:
    """SQL giving a row's hash as a 60-bit integer (the first 15 hex digits of its MD5),
    equal on both engines for equal text; chunks sum them."""
    if engine == "postgres":
        return f"('x' || left(md5({text_sql}), 15))::bit(60)::bigint"
    return f"CAST(CONV(LEFT(MD5({text_sql}), 15), 16, 10) AS UNSIGNED)"


def chunk_checksum(engine: str, hash_sql: str) -> str:
    """SQL aggregating row hashes of a chunk into (row count, sum as text)."""
    if engine == "postgres":
        return f"count(*), coalesce(sum({hash_sql}), 0)::text"
    return f"COUNT(*), CAST(COALESCE(SUM({hash_sql}), 0) AS CHAR)"


def is_exact_total_type(col: Column, source_engine: str) -> bool:
    """Columns whose sums compare exactly across engines (integers and fixed numerics)."""
    base = base_type(col, source_engine)
    if base == "numeric":
        return col.precision is not None
    return base in ("int2", "int4", "int8")
