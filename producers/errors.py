"""Errors a producer raises. `SourceError` is the user's to fix (bad settings, missing
privileges, a table without a key); its message is one line naming the fix."""

from __future__ import annotations


class SourceError(RuntimeError):
    """The source cannot be read as configured; the message says what to change."""


class SourceUnreachable(SourceError):
    """The source did not accept a connection (down, wrong address or credentials)."""


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge an event; the source position was not acknowledged."""
