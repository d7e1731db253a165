"""Column defaults and CHECK expressions from one engine's SQL to the other's, only where
the translation is certain: literals, CURRENT_TIMESTAMP, and checks built of columns,
literals, comparisons and AND/OR/NOT/IS NULL/LIKE. Anything else (a function, ANY(ARRAY...),
a cast to a type the target lacks) comes back as the reason a person must do it.

The same engine on both sides keeps the source's text verbatim."""

from __future__ import annotations

import re

Translation = tuple[str | None, str | None]  # (target SQL, or why it needs a person)

_CAST = re.compile(
    r"::\s*(?:character varying|double precision|bit varying|"
    r"(?:timestamp|time) with(?:out)? time zone|\"[^\"]+\"|[a-z_][a-z0-9_]*)"
    r"(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?",
    re.IGNORECASE,
)
# PostgreSQL prints `col IN ('a', 'b')` as `col = ANY (ARRAY['a', 'b'])`.
_ANY_ARRAY = re.compile(r"=\s*ANY\s*\(\s*\(?\s*ARRAY\[(.*?)\]\s*\)?\s*\)", re.IGNORECASE)
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:e[+-]?\d+)?$", re.IGNORECASE)
_NOW = re.compile(
    r"^(?:now\(\)|current_timestamp(?:\(\d?\))?|transaction_timestamp\(\)|localtimestamp)$",
    re.IGNORECASE,
)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<dq>"(?:[^"]|"")+")
      | (?P<bq>`(?:[^`]|``)+`)
      | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      | (?P<op><>|!=|<=|>=|~~|[=<>+\-*/%(),])
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "is", "null", "like", "true", "false", "between", "in"}


def _unwrap(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _literal_string(value: str, target: str) -> str:
    if target == "mysql":
        value = value.replace("\\", "\\\\")  # MySQL reads backslash escapes in literals
    return "'" + value.replace("'", "''") + "'"


def _pg_literal(text: str) -> str | None:
    """The value of a PostgreSQL constant default ('x'::text, 5, (0)::numeric), or None."""
    text = _unwrap(_CAST.sub("", _unwrap(text)))
    text = _unwrap(text)
    if _NUMBER.match(text):
        return text
    if (
        len(text) >= 2
        and text[0] == "'"
        and text[-1] == "'"
        and "'" not in text[1:-1].replace("''", "")
    ):
        return text
    return None


def enum_default(default: str) -> str | None:
    """A PostgreSQL enum column's default (`'happy'::mood`) as a plain literal, for a target
    where the column is text; None when it is not a constant."""
    literal = _pg_literal(default)
    return literal if literal and literal.startswith("'") else None


def translate_default(default: str, source: str, target: str, target_type: str) -> Translation:
    """The default for the target column, or why it cannot be written."""
    if source == target:
        return default, None
    text = default.strip()
    lowered = _unwrap(_CAST.sub("", text)).lower()
    if lowered == "null":
        return None, None
    if _NOW.match(lowered):
        if target == "mysql":
            precise = "(6)" if "(6)" in target_type else ""
            return f"CURRENT_TIMESTAMP{precise}", None
        return "CURRENT_TIMESTAMP", None
    if lowered in ("true", "false"):
        return ("1" if lowered == "true" else "0"), None
    if lowered in ("current_date", "curdate()"):
        return ("(CURRENT_DATE)" if target == "mysql" else "CURRENT_DATE"), None
    literal = _pg_literal(text) if source == "postgres" else _mysql_literal(text)
    if literal is None:
        return None, f"default {default} is an expression the target cannot take as it is"
    if literal.startswith("'"):
        return _literal_string(literal[1:-1].replace("''", "'"), target), None
    return literal, None


def _mysql_literal(text: str) -> str | None:
    if _NUMBER.match(text) or (text.startswith("'") and text.endswith("'")):
        return text
    return None


def translate_check(expression: str, source: str, target: str) -> Translation:
    """A CHECK expression for the target, or why it needs a person."""
    if source == target:
        return expression, None
    text = expression
    if source == "postgres":
        text = _ANY_ARRAY.sub(r"IN (\1)", _CAST.sub("", expression))
    out: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            return None, f"CHECK {expression}: `{text[pos : pos + 12].strip()}` has no translation"
        pos = match.end()
        kind, value = match.lastgroup, match.group(match.lastgroup or 0)
        if kind == "word" and value.lower() not in _KEYWORDS:
            following = text[pos:].lstrip()
            if following.startswith("("):
                return None, f"CHECK {expression}: calls {value}(), not translated"
            out.append(_identifier(value, target))
        elif kind in ("dq", "bq"):
            out.append(_identifier(value[1:-1].replace(value[0] * 2, value[0]), target))
        elif kind == "string":
            out.append(_literal_string(value[1:-1].replace("''", "'"), target))
        elif kind == "op" and value == "~~":
            out.append("LIKE")
        else:
            out.append(value)
    return " ".join(out).replace("( ", "(").replace(" )", ")").replace(" ,", ","), None


def _identifier(name: str, target: str) -> str:
    if target == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'
