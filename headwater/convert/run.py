"""`headwater convert` for a task: the selected source tables (after the task's table-mapping
rules, when it has any) read from the source catalog, written as target DDL in two phases
(tables before the full load; unique constraints, indexes and foreign keys after it), with
every object that needs a person listed; and `--apply` of either phase on the target."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from headwater.config import TaskConfig
from headwater.convert.ddl import DdlWriter, ManualStep, TableDdl
from headwater.databases import open_engine, redacted, source_schemas, target_where
from headwater.inventory import mysql as my_inventory
from headwater.inventory import postgres as pg_inventory
from headwater.inventory.model import SchemaObjects, TableInventory
from producers.errors import SourceError
from schemas.tables import TableId, TableSchema


@dataclass
class Applied:
    statement: str
    error: str | None = None


@dataclass
class ConversionPlan:
    task: str
    source: str
    target: str
    target_engine: str
    schemas: list[str] = field(default_factory=list)  # CREATE SCHEMA of PostgreSQL targets
    tables: list[TableDdl] = field(default_factory=list)
    manual: list[ManualStep] = field(default_factory=list)  # views, routines
    applied: list[Applied] = field(default_factory=list)
    phase: str = ""  # what --apply ran: "tables" or "post-load"

    @property
    def create_statements(self) -> list[str]:
        return self.schemas + [s for t in self.tables for s in t.create]

    @property
    def post_load_statements(self) -> list[str]:
        # Unique constraints and indexes first: a foreign key needs the parent's key.
        ordered = [s for t in self.tables for s in t.post_load if "FOREIGN KEY" not in s]
        return ordered + [s for t in self.tables for s in t.post_load if "FOREIGN KEY" in s]

    @property
    def all_manual(self) -> list[ManualStep]:
        return [m for t in self.tables for m in t.manual] + self.manual

    @property
    def apply_failed(self) -> bool:
        return any(a.error for a in self.applied)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "convert",
            "task": self.task,
            "source": self.source,
            "target": self.target,
            "target_engine": self.target_engine,
            "create": self.create_statements,
            "post_load": self.post_load_statements,
            "manual": [asdict(m) for m in self.all_manual],
            "notes": [{"table": t.table, "note": n} for t in self.tables for n in t.notes],
            "applied": [asdict(a) for a in self.applied],
            "phase": self.phase,
        }


class _Rules:
    """The task's table-mapping rules (renames, removed columns, type changes) or none."""

    def __init__(self, task: TaskConfig) -> None:
        self.engine: Any = None
        if task.has_table_mappings:
            from transforms.engine import MappingEngine
            from transforms.load import task_mappings

            self.engine = MappingEngine(task_mappings(task))  # type: ignore[arg-type]

    def schema(self, schema: TableSchema) -> TableSchema | None:
        if self.engine is None:
            return schema
        from transforms.engine import transform_schema

        result: TableSchema | None = transform_schema(self.engine, schema)
        return result

    def table(self, table: TableId) -> TableId:
        if self.engine is None:
            return table
        renamed: TableId = self.engine.output_table(table)
        return renamed


def _inventories(
    task: TaskConfig, schemas: list[TableSchema]
) -> tuple[list[TableInventory], SchemaObjects]:
    engine = open_engine(task.source.url, task.source.engine, "source")
    module = pg_inventory if task.source.engine == "postgres" else my_inventory
    try:
        with engine.connect() as conn:
            inventories = [module.table_inventory(conn, s) for s in schemas]
            objects = module.schema_objects(conn, sorted({s.table.schema for s in schemas}))
        return inventories, objects
    finally:
        engine.dispose()


def plan_task(task: TaskConfig) -> ConversionPlan:
    """The target DDL for the task's tables; reads the source only."""
    if task.target.engine not in ("postgres", "mysql"):
        raise SourceError(
            f"target.engine {task.target.engine!r} has no converter; use postgres or mysql"
        )
    schemas = source_schemas(task)
    inventories, objects = _inventories(task, schemas)
    rules = _Rules(task)
    selected = {s.table for s in schemas}
    writer = DdlWriter(task.target.engine, task.source.engine)
    plan = ConversionPlan(
        task.name, redacted(task.source.url), redacted(task.target.url), task.target.engine
    )
    for inv in inventories:
        mapped = rules.schema(inv.schema)
        if mapped is None:
            continue  # the rules exclude it
        where = target_where(task, rules.table(inv.schema.table))
        out = TableDdl(str(inv.schema.table), ".".join(p for p in where if p))
        inv.schema = mapped
        writer.create_table(where, inv, out)
        for index in inv.indexes:
            writer.index(where, index, inv, out)
        for fk in inv.foreign_keys:
            parent = target_where(task, rules.table(fk.parent)) if fk.parent in selected else None
            writer.foreign_key(where, parent, fk, out)
        plan.tables.append(out)
        if task.target.engine == "postgres" and where[0]:
            create = f"CREATE SCHEMA IF NOT EXISTS {writer.q(where[0])}"
            plan.schemas += [] if create in plan.schemas else [create]
    plan.manual += [
        ManualStep(v, "view", "views are not migrated: recreate it on the target")
        for v in objects.views
    ]
    plan.manual += [
        ManualStep(r, "routine", "functions and procedures are not migrated: port it by hand")
        for r in objects.routines
    ]
    return plan


def apply_plan(task: TaskConfig, plan: ConversionPlan, post_load: bool) -> None:
    """Run one phase's statements on the target, each on its own; failures are recorded."""
    statements = plan.post_load_statements if post_load else plan.create_statements
    plan.phase = "post-load" if post_load else "tables"
    engine = open_engine(task.target.url, task.target.engine, "target")
    try:
        for statement in statements:
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(statement)
                plan.applied.append(Applied(statement))
            except DBAPIError as exc:
                first = " ".join(str(exc.orig).split())[:300]
                plan.applied.append(Applied(statement, first))
    finally:
        engine.dispose()
