"""Property tests of the DMS wildcard matcher (against a plain backtracking reference) and of
the expression language (arithmetic, text literals, concatenation and comparison against
Python's own results; any input either parses or fails with ExpressionError)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.evaluate import EvaluationError, compile_expression
from transforms.expression import ExpressionError, parse
from transforms.wildcard import WildcardError, matches

NAME_CHARS = "abcd_%[]-x1"
names = st.text(alphabet="abcd_x1-", max_size=8)


def _tokens(pattern: str) -> list[tuple[str, str]]:
    """("any", ""), ("one", ""), ("set", chars) or ("lit", c), the way DMS reads a pattern."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%":
            out.append(("any", ""))
        elif c == "_":
            out.append(("one", ""))
        elif c == "[":
            end = pattern.index("]", i + 1)
            body, chars, j = pattern[i + 1 : end], set(), 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    chars |= {chr(k) for k in range(ord(body[j]), ord(body[j + 2]) + 1)}
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            out.append(("set", "".join(chars)))
            i = end
        else:
            out.append(("lit", c))
        i += 1
    return out


def _reference(tokens: list[tuple[str, str]], name: str) -> bool:
    if not tokens:
        return not name
    kind, arg = tokens[0]
    if kind == "any":
        return any(_reference(tokens[1:], name[k:]) for k in range(len(name) + 1))
    if not name:
        return False
    head = {"one": True, "set": name[0] in arg, "lit": name[0] == arg}[kind]
    return head and _reference(tokens[1:], name[1:])


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=NAME_CHARS, max_size=8), names)
def test_wildcard_matches_the_reference(pattern: str, name: str) -> None:
    try:
        tokens = _tokens(pattern)
    except ValueError:  # an unclosed bracket
        with pytest.raises(WildcardError):
            matches(pattern, name)
        return
    try:
        got = matches(pattern, name)
    except WildcardError:
        return  # an empty [] or a reversed range: rejected, never silently matched
    assert got == _reference(tokens, name)


@given(names)
def test_a_name_matches_itself_with_literal_brackets_and_percent(name: str) -> None:
    literal = "".join(f"[{c}]" if c in "_%[" else c for c in name)
    assert matches(literal, name)
    assert matches("%", name)
    assert matches("_" * len(name), name)
    assert not matches("_" * (len(name) + 1), name)


# --- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Arith:
    text: str
    value: int


def _combine(op: str, a: Arith, b: Arith) -> Arith:
    value = {"+": a.value + b.value, "-": a.value - b.value, "*": a.value * b.value}[op]
    return Arith(f"({a.text} {op} {b.text})", value)


leaves = st.integers(-1000, 1000).map(lambda n: Arith(f"-{-n}" if n < 0 else str(n), n)) | st.just(
    Arith("$x", 7)
)
arith = st.recursive(
    leaves,
    lambda inner: st.builds(_combine, st.sampled_from("+-*"), inner, inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(arith)
def test_arithmetic_matches_python(expr: Arith) -> None:
    assert compile_expression(expr.text)({"x": 7}, None) == expr.value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30))
def test_text_literals_and_concat_round_trip(a: str, b: str) -> None:
    quoted = "'" + a.replace("'", "''") + "'"
    assert compile_expression(quoted)({}, None) == a
    assert compile_expression(f"{quoted} || $b")({"b": b}, None) == a + b
    assert compile_expression("$a || $b")({"a": a, "b": None}, None) is None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-50, 50), st.integers(-50, 50), st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
)
def test_comparisons_match_python(a: int, b: int, op: str) -> None:
    expected = {
        "=": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]
    fn = compile_expression(f"$a {op} $b and not ($a {op} $b) = false")
    assert fn({"a": a, "b": b}, None) is expected


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="$ab01'()+-*/%|=<>!,. andortuli", max_size=25))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        fn = compile_expression(text)
    except ExpressionError:
        return
    with contextlib.suppress(EvaluationError):
        fn({"a": 1, "b": "x"}, None)


def test_precedence_and_three_valued_logic() -> None:
    assert compile_expression("1 + 2 * 3")({}, None) == 7
    assert compile_expression("null or true")({}, None) is True
    assert compile_expression("null and true")({}, None) is None
    assert compile_expression("null and false")({}, None) is False
    assert compile_expression("$a is null")({"a": None}, None) is True
    assert compile_expression("$a not in (1, 2)")({"a": 3}, None) is True
    assert compile_expression("coalesce($a, 'x') || substr('hello', 2, 3)")({}, None) == "xell"
    with pytest.raises(ExpressionError, match="position 5"):
        parse("1 + ")
