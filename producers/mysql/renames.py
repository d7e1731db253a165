"""Which tables a DDL statement from the binlog renames, and what a rename does to the
names a task follows: `RENAME TABLE a TO b [, c TO d ...]` and
`ALTER TABLE a ... RENAME [TO | AS] b`; and which tables a `DROP TABLE` drops and a
`CREATE TABLE` makes. Pure functions over the statement text, so the binlog
reader can follow a rename without asking INFORMATION_SCHEMA (which shows the tables as they
are now, not as they were when the statement was written).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.tables import TableId

# Tokens: comments first (skipped), then quoted identifiers and strings, words, punctuation.
# `/*! ... */` and `/*M! ... */` are executable comments: the server runs their text.
_TOKEN = re.compile(
    r"""
      (?P<exec>/\*M?!\d*(?P<body>.*?)\*/)
    | (?P<comment>/\*.*?\*/|--[ \t][^\n]*|\#[^\n]*)
    | `(?P<quoted>(?:[^`]|``)*)`
    | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
    | (?P<word>[A-Za-z0-9_$]+)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    quoted: bool = False

    def is_word(self, *words: str) -> bool:
        return not self.quoted and self.text.upper() in words


def _tokens(query: str) -> list[_Token]:
    out: list[_Token] = []
    for found in _TOKEN.finditer(query):
        kind = found.lastgroup
        if found.group("exec") is not None:
            out += _tokens(found.group("body"))
        elif kind == "quoted":
            out.append(_Token(found.group("quoted").replace("``", "`"), quoted=True))
        elif kind in ("word", "string", "other"):
            out.append(_Token(found.group(0)))
    return out


class _Reader:
    """A cursor over the tokens of one statement."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self, ahead: int = 0) -> _Token | None:
        index = self.at + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, *words: str) -> bool:
        """Consume the next token when it is one of `words`."""
        token = self.peek()
        if token is not None and token.is_word(*words):
            self.at += 1
            return True
        return False

    def name(self, default_db: str) -> TableId | None:
        """`[db.]table`, or None when the next token is not a name."""
        first = self.peek()
        if first is None or not (first.quoted or re.fullmatch(r"[A-Za-z0-9_$]+", first.text)):
            return None
        self.at += 1
        dot, second = self.peek(), self.peek(1)
        if dot is not None and dot.text == "." and second is not None:
            self.at += 2
            return TableId(first.text, second.text)
        return TableId(default_db, first.text)

    def skip_wait(self) -> None:
        """MariaDB's `WAIT n` / `NOWAIT` after a table name."""
        if self.take("NOWAIT"):
            return
        if self.take("WAIT"):
            self.at += 1


def _rename_statement(reader: _Reader, default_db: str) -> list[tuple[TableId, TableId]]:
    # RENAME TABLE[S] [IF EXISTS] a [WAIT n | NOWAIT] TO b [, c TO d ...]
    if not reader.take("TABLE", "TABLES"):
        return []
    if reader.take("IF"):
        reader.take("EXISTS")
    pairs = []
    while True:
        old = reader.name(default_db)
        reader.skip_wait()
        if old is None or not reader.take("TO"):
            return []
        new = reader.name(default_db)
        if new is None:
            return []
        pairs.append((old, new))
        token = reader.peek()
        if token is None or token.text == ";":
            return pairs
        if token.text != ",":
            return []
        reader.at += 1


def _alter_specs(tokens: Sequence[_Token]) -> list[list[_Token]]:
    """The alter specifications, split at the commas outside parentheses."""
    specs: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        if not token.quoted and token.text == "(":
            depth += 1
        elif not token.quoted and token.text == ")":
            depth -= 1
        elif depth == 0 and not token.quoted and token.text == ",":
            specs.append([])
            continue
        specs[-1].append(token)
    return specs


def _alter_statement(reader: _Reader, default_db: str) -> list[tuple[TableId, TableId]]:
    # ALTER [ONLINE] [IGNORE] TABLE [IF EXISTS] a [WAIT n | NOWAIT] spec [, spec ...]
    reader.take("ONLINE")
    reader.take("IGNORE")
    if not reader.take("TABLE"):
        return []
    if reader.take("IF"):
        reader.take("EXISTS")
    old = reader.name(default_db)
    if old is None:
        return []
    reader.skip_wait()
    new: TableId | None = None
    for spec in _alter_specs(reader.tokens[reader.at :]):
        if not spec or not spec[0].is_word("RENAME"):
            continue
        inner = _Reader(spec[1:])
        what = inner.peek()
        if what is not None and what.is_word("COLUMN", "INDEX", "KEY"):
            continue  # renames a column or an index, not the table
        inner.take("TO", "AS")
        new = inner.name(default_db) or new
    return [(old, new)] if new is not None and new != old else []


def renamed_tables(query: str, default_db: str) -> list[tuple[TableId, TableId]]:
    """The (old, new) names a statement renames, in the order the server applies them;
    empty for any other statement. Unqualified names are in `default_db` (the database of
    the session that ran the statement)."""
    reader = _Reader(_tokens(query))
    if reader.take("RENAME"):
        return _rename_statement(reader, default_db)
    if reader.take("ALTER"):
        return _alter_statement(reader, default_db)
    return []


def dropped_tables(query: str, default_db: str) -> list[TableId]:
    """The tables a `DROP TABLE [IF EXISTS] a [, b ...]` statement drops; empty for any
    other statement and for `DROP TEMPORARY TABLE` (never a followed table)."""
    reader = _Reader(_tokens(query))
    if not reader.take("DROP") or reader.take("TEMPORARY") or not reader.take("TABLE", "TABLES"):
        return []
    if reader.take("IF"):
        reader.take("EXISTS")
    tables = []
    while (table := reader.name(default_db)) is not None:
        tables.append(table)
        token = reader.peek()
        if token is None or token.text != ",":
            break
        reader.at += 1
    return tables


def created_table(query: str, default_db: str) -> TableId | None:
    """The table a `CREATE [OR REPLACE] TABLE a ...` statement makes, new and empty (or
    filled by its own SELECT, whose rows follow in the binlog). None for any other
    statement, for a temporary table, and for `IF NOT EXISTS`, which may have left an
    existing table as it was."""
    reader = _Reader(_tokens(query))
    if not reader.take("CREATE"):
        return None
    if reader.take("OR"):
        reader.take("REPLACE")
    if reader.take("TEMPORARY") or not reader.take("TABLE"):
        return None
    if reader.take("IF"):
        return None
    return reader.name(default_db)


@dataclass(frozen=True, slots=True)
class RenameEffect:
    """What one statement's renames leave behind: the names whose table moved away and
    nothing took their place (`vacated`), and the names that hold a table which came from
    elsewhere (`filled`, each with the name the table had before the statement)."""

    vacated: tuple[TableId, ...]
    filled: tuple[tuple[TableId, TableId], ...]


def rename_effect(pairs: Sequence[tuple[TableId, TableId]]) -> RenameEffect:
    """Apply the renames one after the other, as the server does (so a swap through a
    temporary name, `a TO tmp, b TO a, tmp TO b`, fills `a` and `b` and vacates nothing)."""
    origin: dict[TableId, TableId] = {}  # name now -> the name its table had before
    vacated: list[TableId] = []
    for old, new in pairs:
        origin[new] = origin.pop(old, old)
        if old not in origin and old not in vacated:
            vacated.append(old)
        if new in vacated:
            vacated.remove(new)
    filled = tuple((new, was) for new, was in origin.items() if new != was)
    return RenameEffect(tuple(vacated), filled)
