"""The rule model: AWS DMS table-mapping rules (selection and transformation, with the DMS
JSON key names as aliases) plus headwater's own actions (masking, row-filter expressions,
topic routing). A DMS JSON document and inline YAML both validate into `TableMappings`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Naming actions change a schema, table or column name; one wins per object.
NAMING_ACTIONS = frozenset(
    {
        "rename",
        "convert-lowercase",
        "convert-uppercase",
        "add-prefix",
        "remove-prefix",
        "replace-prefix",
        "add-suffix",
        "remove-suffix",
        "replace-suffix",
    }
)
DMS_MASKS = frozenset(
    {"data-masking-digits-mask", "data-masking-digits-randomize", "data-masking-hash-mask"}
)
HEADWATER_MASKS = frozenset({"mask-hash", "mask-redact", "mask-keep-last"})
COLUMN_ACTIONS = frozenset(
    {
        "remove-column",
        "include-column",
        "add-column",
        "change-data-type",
        "add-before-image-columns",
    }
    | DMS_MASKS
    | HEADWATER_MASKS
)
TABLE_ACTIONS = frozenset({"define-primary-key", "filter-row", "route"})
TRANSFORMATION_ACTIONS = NAMING_ACTIONS | COLUMN_ACTIONS | TABLE_ACTIONS

# Which rule-target each action accepts.
ACTION_TARGETS: dict[str, frozenset[str]] = {
    **{a: frozenset({"schema", "table", "column"}) for a in NAMING_ACTIONS},
    **{a: frozenset({"column"}) for a in COLUMN_ACTIONS},
    "add-column": frozenset({"column"}),
    "add-before-image-columns": frozenset({"column"}),
    **{a: frozenset({"table"}) for a in TABLE_ACTIONS},
}

FILTER_OPERATORS = ("eq", "noteq", "lte", "ste", "gte", "between", "notbetween", "null", "notnull")


class _Rule(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class ObjectLocator(_Rule):
    schema_name: str = Field(alias="schema-name")
    table_name: str = Field(default="%", alias="table-name")
    column_name: str | None = Field(default=None, alias="column-name")


class FilterCondition(_Rule):
    filter_operator: Literal[
        "eq", "noteq", "lte", "ste", "gte", "between", "notbetween", "null", "notnull"
    ] = Field(alias="filter-operator")
    value: str | int | float | None = None
    start_value: str | int | float | None = Field(default=None, alias="start-value")
    end_value: str | int | float | None = Field(default=None, alias="end-value")


class Filter(_Rule):
    filter_type: Literal["source"] = Field(default="source", alias="filter-type")
    column_name: str = Field(alias="column-name")
    filter_conditions: list[FilterCondition] = Field(alias="filter-conditions", min_length=1)


def _rule_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError('rule-id must be a number, e.g. "1"') from None


class SelectionRule(_Rule):
    rule_type: Literal["selection"] = Field(alias="rule-type")
    rule_id: int = Field(alias="rule-id")
    rule_name: str | None = Field(default=None, alias="rule-name")
    object_locator: ObjectLocator = Field(alias="object-locator")
    rule_action: Literal["include", "exclude", "explicit"] = Field(alias="rule-action")
    filters: list[Filter] = Field(default_factory=list)

    _id = field_validator("rule_id", mode="before")(_rule_id)


class DataType(_Rule):
    """A DMS data type: string, int1/2/4/8, numeric, real4/8, boolean, date, time, datetime,
    bytes (clob/blob/nclob are taken as string/bytes)."""

    type: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None


class PrimaryKeyDef(_Rule):
    name: str | None = None
    columns: list[str] = Field(min_length=1)


class BeforeImageDef(_Rule):
    column_prefix: str = Field(default="BI_", alias="column-prefix")
    column_suffix: str = Field(default="", alias="column-suffix")
    column_filter: Literal["pk-only", "non-lob", "all"] = Field(
        default="pk-only", alias="column-filter"
    )


class TransformationRule(_Rule):
    rule_type: Literal["transformation"] = Field(alias="rule-type")
    rule_id: int = Field(alias="rule-id")
    rule_name: str | None = Field(default=None, alias="rule-name")
    rule_target: Literal["schema", "table", "column"] = Field(alias="rule-target")
    object_locator: ObjectLocator = Field(alias="object-locator")
    rule_action: str = Field(alias="rule-action")
    value: str | int | None = None
    old_value: str | None = Field(default=None, alias="old-value")
    expression: str | None = None
    data_type: DataType | None = Field(default=None, alias="data-type")
    primary_key_def: PrimaryKeyDef | None = Field(default=None, alias="primary-key-def")
    before_image_def: BeforeImageDef | None = Field(default=None, alias="before-image-def")

    _id = field_validator("rule_id", mode="before")(_rule_id)

    @property
    def text_value(self) -> str:
        return "" if self.value is None else str(self.value)


class IgnoredRule(_Rule):
    """DMS rule types that tune DMS itself (`table-settings`: parallel load, LOB settings)."""

    rule_type: Literal["table-settings", "post-processing"] = Field(alias="rule-type")
    rule_id: int = Field(default=0, alias="rule-id")


Rule = Annotated[SelectionRule | TransformationRule | IgnoredRule, Field(discriminator="rule_type")]


class TableMappings(BaseModel):
    """A whole table-mappings document: its rules in document order."""

    model_config = ConfigDict(frozen=True)

    rules: tuple[SelectionRule | TransformationRule, ...]

    @property
    def selection(self) -> tuple[SelectionRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, SelectionRule))

    @property
    def transformations(self) -> tuple[TransformationRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, TransformationRule))
