"""The streaming producer falls back to reading frames in Python when the frame loop cannot
be had, rather than failing the task."""

from __future__ import annotations

import pytest

from producers.postgres import native_loop


def test_a_connection_without_its_libpq_pointer_gets_no_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not native_loop.available():
        pytest.skip("the native frame loop is not available")

    class Bare:  # what a psycopg without `pgconn_ptr` would hand over
        socket = 5

    assert native_loop.open_loop(Bare()) is None
    assert "frames are read in Python" in caplog.text


def test_no_loop_when_it_is_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_loop, "_PQ", None)
    assert not native_loop.available()
    assert native_loop.open_loop(object()) is None


class _Function:
    argtypes: object = None
    restype: object = None


class _Library:
    """A built library that lacks the functions named by a prefix (built before them)."""

    def __init__(self, lacks: str) -> None:
        self.lacks = lacks

    def __getattr__(self, name: str) -> _Function:
        if name.startswith(self.lacks):
            raise AttributeError(name)
        return _Function()


def test_a_library_built_before_the_loop_keeps_its_other_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from schemas import native_lib

    missing: set[str] = set()
    monkeypatch.setattr(native_lib, "MISSING", missing)
    native_lib._declare(_Library("hw_loop_"))  # type: ignore[arg-type]
    loop = {"hw_loop_new", "hw_loop_free", "hw_loop_register", "hw_loop_clear", "hw_loop_run"}
    assert missing == loop
    with pytest.raises(AttributeError):  # a function every other path needs: not loaded
        native_lib._declare(_Library("hw_collapse"))  # type: ignore[arg-type]
