"""The task file: a YAML document validated by pydantic. Every setting has a default that
works against the local stack, and a wrong one fails with the field and the fix named."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.tables import TableId

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")


class ConfigError(ValueError):
    """A task file that cannot be used; the message names the field and the fix."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Model):
    engine: Literal["postgres", "mysql"] = "postgres"
    url: str = "postgresql://postgres@127.0.0.1:5432/hw_source"
    slot_name: str | None = Field(default=None, description="default: headwater_<task>")
    publication: str | None = Field(default=None, description="default: headwater_<task>")
    snapshot_fetch_rows: int = Field(default=5000, ge=100)
    # PostgreSQL full load: worker processes reading key-range chunks of ~chunk_rows rows.
    snapshot_workers: int = Field(default=2, ge=1, le=64)
    snapshot_chunk_rows: int = Field(default=50_000, ge=100)
    ack_interval_s: float = Field(default=0.5, gt=0, le=30)
    decimal_handling: Literal["precise", "string"] = Field(
        default="precise",
        description="numeric(p,s) as Avro decimal (precise) or as text (string: NaN and "
        "Infinity travel too)",
    )
    # MySQL/MariaDB only.
    server_id: int | None = Field(
        default=None, ge=1, lt=2**32, description="binlog replica id; default: from the task"
    )
    resume_by: Literal["gtid", "position"] = "gtid"
    heartbeat_s: float = Field(default=2.0, gt=0, le=60)


class TargetConfig(_Model):
    engine: Literal["postgres", "mysql", "sqlite"] = "postgres"
    url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/hw_target"
    schema_: str | None = Field(default=None, alias="schema", description="default: source's")
    create_tables: bool = True
    on_error: Literal["dlq", "stop"] = Field(
        default="dlq",
        description="a record the target refuses: to the `<prefix>.dlq` topic, or stop",
    )
    batch_size: int = Field(default=50_000, ge=1, le=200_000)
    batch_wait_s: float = Field(default=0.5, gt=0, le=60)
    # Sink processes `headwater run` starts, in one consumer group: more than one helps only
    # with kafka.partitions > 1 (a partition is applied by one sink at a time).
    workers: int = Field(default=1, ge=1, le=64)


class KafkaConfig(_Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str | None = Field(default=None, description="default: the task name")
    partitions: int = Field(default=1, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    producer: dict[str, Any] = Field(default_factory=dict)
    consumer: dict[str, Any] = Field(default_factory=dict)


class TransformConfig(_Model):
    """Where the table-mapping rules run (only for tasks with table_mappings)."""

    engine: Literal["faust", "confluent"] = Field(
        default="faust",
        description="faust: the faust-streaming app; confluent: the confluent-kafka loop "
        "(same topics and guarantees, about four times the throughput per worker)",
    )
    workers: int = Field(default=1, ge=1, le=64)


class RegistryConfig(_Model):
    url: str = "http://127.0.0.1:8081/apis/ccompat/v7"


class TableSelection(_Model):
    """Which source tables the task moves: `schema.table` patterns with `*` and `?`."""

    include: list[str] = Field(default_factory=lambda: ["public.*"])
    exclude: list[str] = Field(default_factory=list)

    @field_validator("include", "exclude")
    @classmethod
    def _qualified(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            if "." not in p:
                raise ValueError(f"pattern {p!r} must be schema.table, e.g. 'public.{p}'")
        return patterns

    def selects(self, table: TableId) -> bool:
        name = str(table)
        return any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.exclude
        )


class TaskConfig(_Model):
    """One migration task: source, target, the Kafka cluster between them, and what moves."""

    name: str
    mode: Literal["full-load", "cdc", "full-load-and-cdc"] = "full-load-and-cdc"
    source: SourceConfig = Field(default_factory=SourceConfig)
    target: TargetConfig = Field(default_factory=TargetConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    tables: TableSelection = Field(default_factory=TableSelection)
    # Selection and transformation rules (docs/table-mappings.md): inline, or an AWS DMS
    # table-mappings JSON file read as it is. Validated by transforms/ before the task starts.
    table_mappings: dict[str, Any] | list[Any] | None = None
    table_mappings_file: str | None = None

    @model_validator(mode="after")
    def _one_mapping_source(self) -> TaskConfig:
        if self.table_mappings is not None and self.table_mappings_file is not None:
            raise ValueError("use table_mappings or table_mappings_file, not both")
        return self

    @property
    def has_table_mappings(self) -> bool:
        """Whether rules apply: then a transform stage sits between producer and sink."""
        return self.table_mappings is not None or self.table_mappings_file is not None

    @property
    def sink_topic_prefix(self) -> str:
        """The prefix of the topics the sink reads: the transformed ones when rules apply
        (`<prefix>.transformed.<schema>.<table>`), else the producer's raw topics."""
        if self.has_table_mappings:
            return f"{self.topic_prefix}.transformed"
        return self.topic_prefix

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                "use letters, digits, '_' or '-', starting with a letter, at most 63 characters"
            )
        return name

    @property
    def topic_prefix(self) -> str:
        return self.kafka.topic_prefix or self.name

    @property
    def slot_name(self) -> str:
        return self.source.slot_name or f"headwater_{_ident(self.name)}"

    @property
    def publication(self) -> str:
        return self.source.publication or f"headwater_{_ident(self.name)}"

    @property
    def sink_group(self) -> str:
        return f"headwater-{self.name}-sink"


def _ident(name: str) -> str:
    return name.lower().replace("-", "_")


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown field; check its spelling against docs/task-file.md"
    if kind == "missing":
        return f"{where}: required field is missing; add it"
    return f"{where}: {err['msg']}"


def parse_task(data: Any, origin: str = "task file") -> TaskConfig:
    """Validate a task document; raise ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a YAML mapping with at least `name:`")
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(e)) for e in exc.errors())
        raise ConfigError(f"{origin}: {problems}") from None


def load_task(path: Path) -> TaskConfig:
    """Read and validate the task file at `path`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read task file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_task(data, str(path))
