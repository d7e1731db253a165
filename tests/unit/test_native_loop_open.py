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
