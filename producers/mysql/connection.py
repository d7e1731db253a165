"""Opening connections to a MySQL or MariaDB source: PyMySQL sessions for the catalog and the
snapshot (UTC, utf8mb4), and the connection settings the binlog reader needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote, urlsplit

import pymysql
import pymysql.cursors

from producers.errors import SourceError

if TYPE_CHECKING:
    Connection: TypeAlias = pymysql.connections.Connection[pymysql.cursors.Cursor]
else:
    Connection = pymysql.connections.Connection


def url_settings(url: str) -> dict[str, Any]:
    """host, port, user, password and database of a `mysql://` (or `mysql+pymysql://`) URL."""
    parts = urlsplit(url)
    if not parts.scheme.startswith(("mysql", "mariadb")):
        raise SourceError(
            f"source.url {redact(url)} is not a mysql:// URL; use mysql://user@host/db"
        )
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or None,
    }


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    user = parts.username or ""
    return f"mysql://{user}@{parts.hostname or ''}:{parts.port or 3306}{parts.path}"


def database_of(url: str) -> str:
    """The database named in the URL; the task's tables are selected as `<db>.<table>`."""
    db = url_settings(url)["database"]
    return str(db or "")


def connect(url: str, role: str = "source") -> Connection:
    """A session in UTC with utf8mb4; a failure becomes a SourceError naming the fix."""
    settings = url_settings(url)
    try:
        return pymysql.connect(
            host=settings["host"],
            port=settings["port"],
            user=settings["user"],
            password=settings["password"],
            database=settings["database"],
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=10,
            init_command="SET time_zone = '+00:00'",
        )
    except pymysql.err.MySQLError as exc:
        raise SourceError(
            f"cannot connect to {role} {redact(url)}: {exc.args[-1]}; "
            f"check {role}.url and that the server runs (`headwater stack up`)"
        ) from None


def reader_settings(url: str) -> dict[str, Any]:
    """Connection settings in the form pymysqlreplication's BinLogStreamReader takes."""
    settings = url_settings(url)
    return {
        "host": settings["host"],
        "port": settings["port"],
        "user": settings["user"],
        "passwd": settings["password"],
        "charset": "utf8mb4",
    }
