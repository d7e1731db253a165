"""Pure parts of assess, convert and validate: key-range predicates, the comparison of a
narrowed range, default and CHECK translation, report rendering, and the one-line errors of
the commands for input a user gets wrong."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from headwater.convert.expressions import translate_check, translate_default
from headwater.reports import Report, Section, to_html, worst
from headwater.validate.keyrange import KeyRange, bind_value, key_list, predicate
from headwater.validate.table_check import compare_rows
from headwater.validate.table_side import CanonicalRow


def test_key_range_predicates_per_engine() -> None:
    rng = KeyRange((1, "a"), (5, "z"))
    pg, params = predicate("postgres", ['"a"', '"b"'], rng)
    assert pg == '("a", "b") > (:lo0, :lo1) AND ("a", "b") <= (:hi0, :hi1)'
    assert params == {"lo0": 1, "lo1": "a", "hi0": 5, "hi1": "z"}
    my, _ = predicate("mysql", ["`a`", "`b`"], KeyRange(None, (5, "z")))
    assert my == "((`a` < :hi0) OR (`a` = :hi0 AND `b` <= :hi1))"
    assert predicate("mysql", ["`a`"], KeyRange()) == ("1=1", {})
    assert KeyRange().split([(3,), (7,)]) == [
        KeyRange(None, (3,)),
        KeyRange((3,), (7,)),
        KeyRange((7,), None),
    ]


def test_key_values_bind_for_the_other_engine() -> None:
    aware = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert bind_value(aware, "mysql") == datetime(2024, 1, 1, 10)
    assert bind_value(aware, "postgres") is aware
    token = uuid.uuid4()
    assert bind_value(token, "mysql") == str(token)
    assert bind_value(True, "mysql") == 1
    cond, params = key_list("postgres", ['"id"'], [(1,), (2,)])
    assert cond == '"id" IN (:k0_0, :k1_0)' and params == {"k0_0": 1, "k1_0": 2}


def test_compare_rows_names_missing_extra_and_changed_columns() -> None:
    def row(key: int, *values: str | None) -> CanonicalRow:
        return CanonicalRow((key,), (str(key),), (str(key), *values))

    source = [row(1, "a", "x"), row(2, "b", "y"), row(3, "c", None)]
    target = [row(1, "a", "x"), row(3, "c", "z"), row(4, "d", "w")]
    diffs = compare_rows(source, target, ("id",), ("id", "name", "note"))
    assert [(d.kind, d.key, d.columns) for d in diffs] == [
        ("missing", {"id": "2"}, []),
        ("changed", {"id": "3"}, ["note"]),
        ("extra", {"id": "4"}, []),
    ]


def test_defaults_translate_only_when_certain() -> None:
    assert translate_default("'it''s'::text", "postgres", "mysql", "LONGTEXT") == (
        "'it''s'",
        None,
    )
    assert translate_default("now()", "postgres", "mysql", "DATETIME(6)") == (
        "CURRENT_TIMESTAMP(6)",
        None,
    )
    assert translate_default("(0)::numeric", "postgres", "mysql", "DECIMAL(12, 2)") == ("0", None)
    assert translate_default("true", "postgres", "mysql", "BOOL") == ("1", None)
    assert translate_default("current_timestamp()", "mysql", "postgres", "timestamptz") == (
        "CURRENT_TIMESTAMP",
        None,
    )
    sql, why = translate_default("gen_random_uuid()", "postgres", "mysql", "CHAR(36)")
    assert sql is None and why and "gen_random_uuid()" in why
    assert translate_default("nextval('s')", "postgres", "postgres", "int") == (
        "nextval('s')",
        None,
    )


def test_checks_translate_or_say_why() -> None:
    pg_in = (
        "(((status)::text = ANY ((ARRAY['a'::character varying, 'b'::character varying])::text[])))"
    )
    assert translate_check(pg_in, "postgres", "mysql") == ("(((`status`) IN ('a', 'b')))", None)
    assert translate_check("((price >= (0)::numeric) AND (note IS NOT NULL))", "postgres", "mysql")[
        0
    ] == ("((`price` >= (0)) AND (`note` IS NOT NULL))")
    assert translate_check("(`qty` > 0)", "mysql", "postgres") == ('("qty" > 0)', None)
    sql, why = translate_check("(length(name) > 0)", "postgres", "mysql")
    assert sql is None and why and "length()" in why


def test_report_html_escapes_and_verdict() -> None:
    section = Section("rows", ["key"])
    section.add("fail", "<script>alert(1)</script>")
    page = to_html(Report("validate", "validate t", "fail", ["a & b"], [section]))
    assert "<script>" not in page and "&lt;script&gt;" in page and "a &amp; b" in page
    assert worst(["pass", "warn"]) == "warn" and worst(["pass"]) == "pass"
    assert worst(["warn", "fail", "pass"]) == "fail"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unreachable_endpoints_are_one_line_without_password(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: badcheck\nmode: full-load\n"
        "source: {url: 'postgresql://u:s3cret@127.0.0.1:1/db'}\n"
        "target: {engine: sqlite, url: 'sqlite:///x.db'}\n"
    )
    for command in ("validate", "convert"):
        done = _cli(command, str(task))
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
        assert "s3cret" not in done.stderr + done.stdout
    done = _cli("convert", str(task), "--post-load")
    assert done.returncode == 1 and "--post-load goes with --apply" in done.stderr
