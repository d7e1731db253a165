"""The stack's PostgreSQL and MariaDB come up with the settings CDC needs, and stay up.

Real servers, no mocks: each fixture runs install() and start() like `headwater stack up`
(which installs packages via apt on a fresh machine, so the first run can take a minute)
and leaves the server running for the rest of the suite and for other users of the stack.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TypeVar

import psycopg
import pymysql
import pytest
from psycopg.rows import TupleRow

from headwater.stack.database import PackagedDatabase
from headwater.stack.mariadb import MariaDBService
from headwater.stack.postgres import PostgresService

pytestmark = pytest.mark.integration

# A start() while the server is up only checks it and re-ensures the databases.
SECOND_START_SECONDS = 2.0


# Expected connection URLs per service, with {address} for host:port.
URLS = {
    "postgres": {
        "source_url": "postgresql://postgres@{address}/hw_source",
        "target_url": "postgresql+psycopg://postgres@{address}/hw_target",
    },
    "mariadb": {
        "source_url": "mysql://root@{address}/hw_source",
        "target_url": "mysql+pymysql://root@{address}/hw_target",
    },
}

Database = TypeVar("Database", bound=PackagedDatabase)


def _started(service: Database) -> Database:
    """`service` installed and started, as `headwater stack up` leaves it."""
    service.install()
    service.start()
    return service


@pytest.fixture(scope="module")
def postgres() -> PostgresService:
    return _started(PostgresService())


@pytest.fixture(scope="module")
def mariadb() -> MariaDBService:
    return _started(MariaDBService())


@pytest.fixture(params=["postgres", "mariadb"])
def database(request: pytest.FixtureRequest) -> PackagedDatabase:
    """Each database service in turn, for the checks that hold for both."""
    service: PackagedDatabase = request.getfixturevalue(request.param)
    return service


@pytest.fixture
def pg_source(postgres: PostgresService) -> Iterator[psycopg.Connection[TupleRow]]:
    with psycopg.connect(postgres.status().urls["source_url"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def maria(mariadb: MariaDBService) -> Iterator[pymysql.connections.Connection]:
    conn = pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", password="")
    try:
        yield conn
    finally:
        conn.close()


def _maria_value(conn: pymysql.connections.Connection, sql: str) -> object:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    assert row is not None
    return row[0]


# --- Both ------------------------------------------------------------------------------


def test_database_is_up_with_urls(database: PackagedDatabase) -> None:
    status = database.status()
    address = f"127.0.0.1:{database.port}"
    assert status.state == "up"
    assert status.address == address
    expected = {key: url.format(address=address) for key, url in URLS[database.name].items()}
    assert status.urls == expected


def test_database_second_start_is_quick(database: PackagedDatabase) -> None:
    began = time.monotonic()
    database.start()
    assert time.monotonic() - began < SECOND_START_SECONDS
    assert database.status().state == "up"


# --- PostgreSQL ------------------------------------------------------------------------


def test_postgres_wal_level_is_logical(pg_source: psycopg.Connection[TupleRow]) -> None:
    settings = dict(
        pg_source.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('wal_level', 'max_replication_slots', 'max_wal_senders')"
        ).fetchall()
    )
    assert settings == {
        "wal_level": "logical",
        "max_replication_slots": "20",
        "max_wal_senders": "20",
    }


def test_postgres_databases_exist(postgres: PostgresService) -> None:
    # The target URL is SQLAlchemy's; psycopg itself wants the plain libpq scheme.
    target = postgres.status().urls["target_url"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(target) as conn:
        row = conn.execute("SELECT current_database(), current_user").fetchone()
    assert row == ("hw_target", "postgres")


def test_postgres_can_decode_changes(pg_source: psycopg.Connection[TupleRow]) -> None:
    """A logical slot sees an insert: the whole point of wal_level=logical."""
    slot = "hw_stack_test_slot"
    pg_source.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    pg_source.execute("CREATE TABLE IF NOT EXISTS hw_stack_probe (id int PRIMARY KEY)")
    pg_source.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
    try:
        pg_source.execute("INSERT INTO hw_stack_probe VALUES (1) ON CONFLICT DO NOTHING")
        changes = pg_source.execute(
            "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)", (slot,)
        ).fetchall()
    finally:
        pg_source.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        pg_source.execute("DROP TABLE hw_stack_probe")
    assert any("hw_stack_probe" in str(data) for (data,) in changes)


# --- MariaDB ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("log_bin", 1),
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
        ("server_id", 1),
    ],
)
def test_mariadb_binlog_settings(
    maria: pymysql.connections.Connection,
    variable: str,
    expected: object,
) -> None:
    assert _maria_value(maria, f"SELECT @@GLOBAL.{variable}") == expected


def test_mariadb_databases_exist(maria: pymysql.connections.Connection) -> None:
    with maria.cursor() as cursor:
        cursor.execute("SHOW DATABASES")
        names = {row[0] for row in cursor.fetchall()}
    assert {"hw_source", "hw_target"} <= names


def test_mariadb_writes_rows_to_binlog(maria: pymysql.connections.Connection) -> None:
    """An insert lands in the binlog as a row event: what binlog CDC reads."""
    with maria.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS hw_source.hw_stack_probe (id INT PRIMARY KEY)")
        cursor.execute("SHOW MASTER STATUS")
        row = cursor.fetchone()
        assert row is not None
        binlog_file, position = row[0], row[1]
        cursor.execute("INSERT INTO hw_source.hw_stack_probe VALUES (1)")
        maria.commit()
        cursor.execute(f"SHOW BINLOG EVENTS IN '{binlog_file}' FROM {position}")
        events = [event[2] for event in cursor.fetchall()]
        cursor.execute("DROP TABLE hw_source.hw_stack_probe")
    assert "Write_rows_v1" in events
