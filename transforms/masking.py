"""Column masks for personal data in change streams: the three DMS masks and headwater's own
(keyed hash with a per-task salt, redaction, keep the last N characters). Masks are
deterministic for a given value and salt, so a masked key still joins and still upserts."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

Mask = Callable[[Any], Any]


def _text(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def digits_mask(char: str = "#") -> Mask:
    """DMS data-masking-digits-mask: every digit becomes `char`."""

    def mask(value: Any) -> Any:
        if value is None:
            return None
        return "".join(char if c.isdigit() else c for c in _text(value))

    return mask


def digits_randomize(salt: bytes) -> Mask:
    """DMS data-masking-digits-randomize: every digit becomes a pseudo-random digit, drawn
    from a keyed hash of the value so that one value always randomizes the same way."""

    def mask(value: Any) -> Any:
        if value is None:
            return None
        text = _text(value)
        stream = hmac.new(salt, text.encode(), hashlib.sha256).digest()
        while len(stream) < len(text):
            stream += hashlib.sha256(stream).digest()
        return "".join(str(stream[i] % 10) if c.isdigit() else c for i, c in enumerate(text))

    return mask


def sha256_mask() -> Mask:
    """DMS data-masking-hash-mask: the SHA-256 of the value, as hex."""
    return lambda v: None if v is None else hashlib.sha256(_text(v).encode()).hexdigest()


def keyed_hash(salt: bytes) -> Mask:
    """mask-hash: HMAC-SHA-256 with the task's salt, so hashes cannot be looked up in a
    table of known values without the salt."""
    return lambda v: None if v is None else hmac.new(salt, _text(v).encode(), "sha256").hexdigest()


def redact(replacement: str | None) -> Mask:
    """mask-redact: the value replaced by a fixed text (NULL stays NULL)."""
    text = "REDACTED" if replacement is None else replacement
    return lambda v: None if v is None else text


def keep_last(count: int, char: str = "*") -> Mask:
    """mask-keep-last: every character but the last `count` becomes `char`."""

    def mask(value: Any) -> Any:
        if value is None:
            return None
        text = _text(value)
        hidden = max(len(text) - count, 0)
        return char * hidden + text[hidden:]

    return mask
