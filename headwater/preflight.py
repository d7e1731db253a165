"""Checks `headwater run` makes before it starts or creates anything: each service reachable
with the configured credentials, the source ready for CDC, the rows of every selected table
identifiable (a primary key, REPLICA IDENTITY USING INDEX, or REPLICA IDENTITY FULL for a
keyless table). A failure is one line that names the fix, and leaves nothing half-created
behind."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from headwater.config import TaskConfig
from producers.errors import DeliveryError
from producers.postgres import catalog
from producers.postgres.connection import connect
from schemas.registry import SchemaRegistry


def check_source(task: TaskConfig) -> int:
    """The source is reachable, logical, and every selected table has a primary key or a
    replica identity that identifies its rows. Returns the number of tables selected."""
    if task.source.engine == "mysql":
        from producers.mysql.producer import open_checked

        mysql_conn, _flavor, selected = open_checked(task)
        mysql_conn.close()
        return len(selected)
    with connect(task.source.url) as conn:
        return len(catalog.check_source_ready(conn, task))


def check_kafka(task: TaskConfig, timeout: float = 8.0) -> None:
    admin = AdminClient(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
        }
    )
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        raise DeliveryError(
            f"Kafka at {task.kafka.bootstrap_servers} is unreachable; start it with "
            "`headwater stack up` or fix kafka.bootstrap_servers"
        ) from None


def check_registry(task: TaskConfig) -> None:
    registry = SchemaRegistry(task.registry.url, timeout=5)
    try:
        registry.ping()
    finally:
        registry.close()


def check_target(task: TaskConfig) -> None:
    if task.target.engine != "postgres":
        from consumers.sql_check import check_sql_target

        check_sql_target(task)
        return
    with connect(task.target.url, role="target") as conn:
        conn.execute("SELECT 1")


def check_table_mappings(task: TaskConfig) -> None:
    """The table mappings parse and every rule finds what it names in the source tables the
    task selects (a TableMappingError names the rule and the fix)."""
    from transforms.load import task_engine
    from transforms.validate import check_mappings

    engine = task_engine(task)
    if engine is None or task.source.engine != "postgres":
        return  # MySQL sources: the rules are parsed but not yet checked against the catalog
    with connect(task.source.url) as conn:
        types = catalog.TypeResolver(conn)
        tables = [
            catalog.describe_table(conn, t, types)
            for t in catalog.selected_tables(conn, task.tables)
        ]
    check_mappings(engine.mappings, engine, tables)


def preflight(task: TaskConfig) -> int:
    """Run every check; the number of source tables the task selects."""
    count = check_source(task)
    check_table_mappings(task)
    check_target(task)
    check_kafka(task)
    check_registry(task)
    return count
