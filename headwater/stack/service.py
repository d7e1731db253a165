"""The contract every locally run service of the stack fulfils.

`headwater stack up` installs what is missing, starts what is down and leaves running what
is up, so each service answers the same four questions: is it installed, is it up, start it,
stop it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # every service listens on loopback only


def stack_home() -> Path:
    """Where downloads, data and logs of the local stack live (outside the repository).

    `HEADWATER_HOME` overrides the default `~/.cache/headwater`.
    """
    override = os.environ.get("HEADWATER_HOME")
    base = Path(override) if override else Path.home() / ".cache" / "headwater"
    base.mkdir(parents=True, exist_ok=True)
    return base


@dataclass(frozen=True)
class ServiceStatus:
    """What `stack status` reports for one service."""

    name: str
    state: str  # "up" | "down" | "not-installed"
    address: str  # host:port it listens on
    urls: dict[str, str] = field(default_factory=dict)  # connection URLs for task files
    detail: str = ""


class StackError(RuntimeError):
    """A service could not be installed or started; the message names the fix."""


class LocalService(ABC):
    """One service of the local stack, run as a local process on 127.0.0.1."""

    name: str
    port: int

    @property
    def address(self) -> str:
        """host:port the service listens on."""
        return f"{HOST}:{self.port}"

    @abstractmethod
    def install(self) -> None:
        """Fetch or install what the service needs; quick no-op when already there."""

    @abstractmethod
    def start(self) -> None:
        """Start the service if it is down and wait until it answers; no-op when up."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the service if it runs; data is kept."""

    @abstractmethod
    def status(self) -> ServiceStatus:
        """Report state, address and connection URLs without changing anything."""
