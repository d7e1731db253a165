"""Loads headwater's native library (native/, Rust, C ABI) for the stages that use it: the
PostgreSQL sink's batch collapse (consumers/native_collapse.py), the PostgreSQL full
load's row encoder (producers/postgres/native_rows.py) and the streaming producer's change
encoder (producers/postgres/native_stream.py). Without the library (not built, or
HEADWATER_NATIVE=0) `LIB` is None and those stages run in Python alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_LIBRARY_NAME = "libheadwater_native.so"
_ROOT = Path(__file__).resolve().parent.parent


class CollapseResult(ctypes.Structure):
    """The leading fields of HwResult in native/src/lib.rs (the rest is the library's)."""

    _fields_ = [
        ("status", ctypes.c_int32),
        ("has_ts", ctypes.c_int32),
        ("max_ts", ctypes.c_int64),
        ("upserts", ctypes.c_uint64),
        ("deletes", ctypes.c_uint64),
        ("at", ctypes.c_uint64),
        ("copy_ptr", ctypes.c_void_p),
        ("copy_len", ctypes.c_size_t),
        ("inserts_only", ctypes.c_int32),
    ]


class EncodeResult(ctypes.Structure):
    """The leading fields of HwEncoded in native/src/lib.rs."""

    _fields_ = [
        ("status", ctypes.c_int32),
        ("rows", ctypes.c_uint64),
        ("at", ctypes.c_uint64),
        ("consumed", ctypes.c_uint64),
        ("buf_ptr", ctypes.c_void_p),
        ("buf_len", ctypes.c_size_t),
        ("ends_ptr", ctypes.c_void_p),
    ]


class StreamChange(ctypes.Structure):
    """HwChange in native/src/stream.rs: one streamed change's key then value in `buf`."""

    _fields_ = [
        ("buf_ptr", ctypes.c_void_p),
        ("key_len", ctypes.c_size_t),
        ("total_len", ctypes.c_size_t),
        ("op", ctypes.c_int32),
    ]


class LoopState(ctypes.Structure):
    """HwLoopState in native/src/frames.rs: the frame loop's transaction and output."""

    _fields_ = [
        ("in_tx", ctypes.c_int32),
        ("stop_at_commit", ctypes.c_int32),
        ("xid", ctypes.c_int64),
        ("final_lsn", ctypes.c_int64),
        ("ts_ms", ctypes.c_int64),
        ("seen", ctypes.c_int64),
        ("handed_lsn", ctypes.c_int64),
        ("handed_count", ctypes.c_int64),
        ("committed", ctypes.c_int64),
        ("wal_start", ctypes.c_int64),
        ("server_end", ctypes.c_int64),
        ("records", ctypes.c_int64),
        ("out_ptr", ctypes.c_void_p),
        ("out_len", ctypes.c_size_t),
        ("frame_ptr", ctypes.c_void_p),
        ("frame_len", ctypes.c_size_t),
    ]


def library_path() -> Path | None:
    """Where the built library is: HEADWATER_NATIVE_LIB, else native/target/release."""
    configured = os.environ.get("HEADWATER_NATIVE_LIB")
    if configured:
        return Path(configured)
    built = _ROOT / "native" / "target" / "release" / _LIBRARY_NAME
    return built if built.exists() else None


# Functions whose absence turns off only their own path (the streaming frame loop).
_OPTIONAL = ("hw_loop_",)
MISSING: set[str] = set()


def _declare(lib: ctypes.CDLL) -> None:
    p, size, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64
    signatures: dict[str, tuple[list[object], object]] = {
        "hw_plan_new": ([ctypes.c_char_p, size], p),
        "hw_plan_free": ([p], None),
        "hw_collapse": (
            [p, ctypes.c_char_p, size, p, size, i64, i64],
            ctypes.POINTER(CollapseResult),
        ),
        "hw_collapse_binary": (
            [p, ctypes.c_char_p, size, p, size, i64, i64, ctypes.c_char_p, size],
            ctypes.POINTER(CollapseResult),
        ),
        "hw_binary_ok": ([p, ctypes.c_char_p, size], ctypes.c_int32),
        "hw_result_free": ([ctypes.POINTER(CollapseResult)], None),
        "hw_mysql_plan_new": ([ctypes.c_char_p, size], p),
        "hw_mysql_plan_free": ([p], None),
        "hw_collapse_mysql": (
            [p, ctypes.c_char_p, size, p, size, i64, i64],
            ctypes.POINTER(CollapseResult),
        ),
        "hw_enc_plan_new": ([ctypes.c_char_p, size], p),
        "hw_enc_plan_free": ([p], None),
        "hw_encode": (
            [p, *[ctypes.c_char_p, size] * 4],
            ctypes.POINTER(EncodeResult),
        ),
        "hw_encoded_free": ([ctypes.POINTER(EncodeResult)], None),
        "hw_stream_plan_new": ([ctypes.c_char_p, size], p),
        "hw_stream_plan_free": ([p], None),
        # The result struct goes by address (c_void_p): cheaper per call than byref.
        "hw_stream_encode": ([p, ctypes.c_char_p, size, i64, i64, i64, i64, p], ctypes.c_int32),
        "hw_loop_new": ([p, p, p, p, ctypes.c_int, i64, size], p),
        "hw_loop_free": ([p], None),
        "hw_loop_register": ([p, ctypes.c_uint32, p, ctypes.c_uint32], None),
        "hw_loop_clear": ([p], None),
        "hw_loop_run": ([p, p, i64, i64], ctypes.c_int32),
    }
    for name, (argtypes, restype) in signatures.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            if not name.startswith(_OPTIONAL):
                raise
            # A library built before the function came (`make` builds it again): only the
            # path that needs it runs in Python.
            MISSING.add(name)
            continue
        function.argtypes = argtypes
        function.restype = restype


def _load() -> ctypes.CDLL | None:
    if os.environ.get("HEADWATER_NATIVE", "1") == "0":
        return None
    path = library_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
        _declare(lib)
    except (OSError, AttributeError) as exc:
        log.warning("native library %s not loaded (%s); running in Python alone", path, exc)
        return None
    return lib


LIB = _load()


class NativePlan:
    """A plan the library built from a text spec, freed with the object. Subclasses name the
    library's `new` and `free` functions."""

    _new = ""
    _free = ""

    def __init__(self, spec: str) -> None:
        if LIB is None:
            raise RuntimeError("the native library is not loaded")
        encoded = spec.encode()
        handle = getattr(LIB, self._new)(encoded, len(encoded))
        if not handle:
            raise ValueError(f"the native library refused the plan {spec!r}")
        self._handle: int = handle

    @property
    def handle(self) -> int:
        """The plan's address in the library (valid while this object lives)."""
        return self._handle

    def __del__(self) -> None:
        if LIB is not None and getattr(self, "_handle", None):
            getattr(LIB, self._free)(self._handle)
            self._handle = 0
