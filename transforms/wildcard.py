"""AWS DMS name wildcards: `%` any run of characters, `_` any one character, `[_]` a literal
underscore (any bracketed single character is literal), `[ab]` one of a set, `[a-d]` one of
a range. Matching is case-sensitive, as PostgreSQL names are once unquoted names are folded."""

from __future__ import annotations

import re
from functools import lru_cache


class WildcardError(ValueError):
    """A pattern that cannot be compiled (an unclosed `[`)."""


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """The regex class for the bracket at `start`, and the index after its `]`."""
    end = pattern.find("]", start + 1)
    if end == -1 or end == start + 1:
        raise WildcardError(f"pattern {pattern!r}: '[' at {start} has no closing ']'")
    body = pattern[start + 1 : end]
    parts = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low > high:
                raise WildcardError(f"pattern {pattern!r}: range {low}-{high} is reversed")
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            parts.append(re.escape(body[i]))
            i += 1
    return "[" + "".join(parts) + "]", end + 1


@lru_cache(maxsize=4096)
def compile_wildcard(pattern: str) -> re.Pattern[str]:
    """The anchored regex equivalent of a DMS wildcard pattern."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch == "[":
            cls, i = _bracket(pattern, i)
            out.append(cls)
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def matches(pattern: str, name: str) -> bool:
    """Whether `name` matches the DMS wildcard `pattern` as a whole."""
    return compile_wildcard(pattern).fullmatch(name) is not None


def is_wildcard(pattern: str) -> bool:
    """Whether `pattern` can match more than one name."""
    return any(c in pattern for c in "%_[")
