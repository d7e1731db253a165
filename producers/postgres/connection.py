"""Opening connections to a PostgreSQL source: ordinary ones for the catalog and the
snapshot, replication ones for the log; both with the session settings the text parsers of
`schemas.pg_types` rely on (ISO dates, UTC)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from producers.errors import SourceError, SourceUnreachable

_SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3"


def plain_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+psycopg://`) as libpq URLs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if sep else url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        params = conninfo_to_dict(plain_url(url))
    except psycopg.ProgrammingError:
        return "<unparsable url>"
    user = params.get("user", "")
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"postgresql://{user}@{host}:{port}/{params.get('dbname', '')}"


def application_name(purpose: str | None) -> str:
    """What pg_stat_activity shows for a connection: `headwater-<task> <part>` (<= 63 bytes),
    like the sink's `headwater-<task>`."""
    return f"headwater-{purpose}"[:63] if purpose else "headwater"


def connect(
    url: str, replication: bool = False, role: str = "source", purpose: str | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    """Connect to the `role` database; a failure becomes a SourceError naming the fix.

    `purpose` (e.g. "<task> load") names the connection in pg_stat_activity, so a DBA sees
    which task and which part of it a backend serves."""
    extra: dict[str, str] = {
        "options": _SESSION_OPTIONS,
        "application_name": application_name(purpose),
    }
    if replication:
        extra["replication"] = "database"
    try:
        conninfo = make_conninfo(plain_url(url), **extra)
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise SourceUnreachable(
            f"cannot connect to {role} {redact(url)}: {first}; "
            f"check {role}.url and that the server runs (`headwater stack up`)"
        ) from None
    except psycopg.ProgrammingError as exc:
        raise SourceError(f"{role}.url is not a valid PostgreSQL URL: {exc}") from None
