"""`headwater assess` for a task: source CDC readiness, the selected tables and their type
mapping, the target and Kafka, each as findings; an unreachable endpoint is a failed finding
(the rest is still checked), not an exception."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headwater.assess.findings import Finding, failed, one_line
from headwater.assess.kafka import assess_kafka
from headwater.assess.source_mysql import assess_mysql_source
from headwater.assess.source_pg import assess_postgres_source
from headwater.assess.tables import ColumnMapping, TableSize, assess_tables, to_json
from headwater.assess.target import assess_target
from headwater.config import TaskConfig
from headwater.databases import Endpoint, open_engine, redacted, source_schemas
from producers.errors import SourceError
from schemas.tables import TableSchema


@dataclass
class Assessment:
    task: str
    source: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    mappings: list[ColumnMapping] = field(default_factory=list)
    sizes: list[TableSize] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(f.status == "fail" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "assess",
            "task": self.task,
            "source": self.source,
            "target": self.target,
            "failed": self.failed,
            "findings": [f.to_json() for f in self.findings],
            **to_json(self.mappings, self.sizes),
        }


def _source(task: TaskConfig, result: Assessment) -> list[TableSchema]:
    try:
        engine = open_engine(task.source.url, task.source.engine, "source")
    except SourceError as exc:
        result.findings.append(failed("source", "reachable", one_line(exc), "fix source.url"))
        return []
    try:
        schemas = source_schemas(task)
        if task.source.engine == "mysql":
            from producers.mysql.connection import connect

            with connect(task.source.url) as my:
                result.findings.extend(assess_mysql_source(my, task))
        with engine.connect() as conn:
            if task.source.engine == "postgres":
                result.findings.extend(assess_postgres_source(conn, task, schemas))
            found, result.mappings, result.sizes = assess_tables(
                conn, task.source.engine, task.target.engine, schemas
            )
            result.findings.extend(found)
        return schemas
    finally:
        engine.dispose()


def _target(task: TaskConfig, schemas: list[TableSchema], result: Assessment) -> None:
    if task.target.engine not in ("postgres", "mysql"):
        result.findings.append(
            failed(
                "target",
                "engine",
                f"target.engine {task.target.engine!r} is not assessed",
                "assess supports postgres and mysql targets",
            )
        )
        return
    try:
        engine = open_engine(task.target.url, task.target.engine, "target")
    except SourceError as exc:
        result.findings.append(failed("target", "reachable", one_line(exc), "fix target.url"))
        return
    try:
        endpoint = Endpoint("target", task.target.engine, engine, redacted(task.target.url))
        result.findings.extend(assess_target(endpoint, task, schemas))
    finally:
        engine.dispose()


def assess_task(task: TaskConfig) -> Assessment:
    result = Assessment(task.name, redacted(task.source.url), redacted(task.target.url))
    schemas = _source(task, result)
    _target(task, schemas, result)
    result.findings.extend(assess_kafka(task, [s.table for s in schemas], result.sizes))
    return result
