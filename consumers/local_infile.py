"""LOAD DATA LOCAL sends only the files the sink wrote for a load. With `local_infile` on,
PyMySQL sends whatever file the server's reply names, so a target server (or anyone in the
middle) could read any file the sink process can; the guard wraps PyMySQL's sender and
refuses every name but those `mysql_load` registered for the statement it runs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pymysql.connections
import pymysql.err

REFUSED = 2068
"""CR_LOAD_DATA_LOCAL_INFILE_REJECTED: the client refused to send a file."""

_allowed: set[bytes] = set()
_lock = threading.Lock()


@contextmanager
def allowed(path: str) -> Iterator[None]:
    """Let a LOAD DATA LOCAL send `path` while the block runs."""
    name = os.fsencode(path)
    with _lock:
        _allowed.add(name)
    try:
        yield
    finally:
        with _lock:
            _allowed.discard(name)


def install_guard() -> bool:
    """Wrap PyMySQL's local-file sender, once per process; False when this PyMySQL has no
    such function to wrap (the caller then leaves LOAD DATA LOCAL off)."""
    original: Callable[..., Any] | None = getattr(pymysql.connections, "_send_local_file", None)
    if original is None:
        return False
    if getattr(original, "headwater_guard", False):
        return True

    def guarded(filename: str | bytes, conn: Any) -> Any:
        name = filename if isinstance(filename, bytes) else os.fsencode(filename)
        with _lock:
            known = name in _allowed
        if not known:
            raise pymysql.err.OperationalError(
                REFUSED,
                f"LOAD DATA LOCAL of {name.decode(errors='replace')!r} refused: the sink "
                "sends only the files it wrote for a load",
            )
        return original(filename, conn)

    guarded.headwater_guard = True  # type: ignore[attr-defined]
    pymysql.connections._send_local_file = guarded  # type: ignore[attr-defined]
    return True
