"""The base of the stack's database servers (PostgreSQL, MariaDB), installed as Debian packages.

Both run from a private directory owned by the server's system user (see `headwater.stack.system`),
take their port from the environment and offer the same two databases and URLs.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path

from headwater.stack.apt import apt_install
from headwater.stack.process import file_lock, port_open
from headwater.stack.service import HOST, LocalService, ServiceStatus, StackError
from headwater.stack.system import make_service_dir, service_dir

DATABASES = ("hw_source", "hw_target")  # the CDC source and the migration target


def port_from_env(variable: str, default: int) -> int:
    """A TCP port from environment `variable`, `default` when unset."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{variable}={raw!r} is not a TCP port")
    return int(raw)


class PackagedDatabase(LocalService):
    """A database server from Debian packages, run from its own directory on 127.0.0.1.

    Subclasses name their packages, system user, port and URL schemes, and implement the
    steps that differ: finding the binaries, initialising the data directory, liveness.
    """

    product: str  # the name apt_install reports, e.g. "PostgreSQL"
    packages: tuple[str, ...]
    owner: str  # system user that owns the directory (and runs the server) as root
    port_variable: str
    default_port: int
    debian_stop: str  # how to stop Debian's own server when it holds the port
    superuser: str  # the password-less superuser of the URLs
    source_scheme: str  # URL scheme of the source (the driver's plain one)
    target_scheme: str  # URL scheme of the target (SQLAlchemy's)

    def __init__(self) -> None:
        self.port = port_from_env(self.port_variable, self.default_port)

    @property
    def root(self) -> Path:
        """Directory holding config, data, socket and logs (see `system.service_dir`)."""
        return service_dir(self.name)

    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.root / f"{self.name}.log"

    def urls(self) -> dict[str, str]:
        """Connection URLs for task files: plain for the source, SQLAlchemy for the target."""
        base = f"{self.superuser}@{HOST}:{self.port}"
        source, target = DATABASES
        return {
            "source_url": f"{self.source_scheme}://{base}/{source}",
            "target_url": f"{self.target_scheme}://{base}/{target}",
        }

    def install(self) -> None:
        """Install the packages via apt when missing, then initialise the data once."""
        if not self._installed():
            apt_install(self.packages, self.product)
        if not self._initialised():
            with self._lock():
                self._initialise()

    def status(self) -> ServiceStatus:
        """State from the server's pid file and the port; changes nothing."""
        if not self._installed():
            state, detail = "not-installed", "apt-get install -y " + " ".join(self.packages)
        else:
            state = "up" if self._running() else "down"
            detail = f"data {self.data_dir}, log {self.log_file}"
        return ServiceStatus(self.name, state, self.address, self.urls(), detail)

    def _lock(self) -> AbstractContextManager[None]:
        """Serialise initialisation and start between CLIs or test workers doing `up`."""
        return file_lock(make_service_dir(self.name, self.owner) / "stack.lock")

    def _check_port_free(self) -> None:
        """Fail with a fix when something else (often Debian's own server) holds the port."""
        if port_open(HOST, self.port):
            raise StackError(
                f"port {self.port} is taken by another process; stop it ({self.debian_stop}) "
                f"or set {self.port_variable} to a free port"
            )

    @abstractmethod
    def _installed(self) -> bool:
        """Whether the server's binaries are there."""

    @abstractmethod
    def _initialised(self) -> bool:
        """Whether the data directory has been initialised."""

    @abstractmethod
    def _initialise(self) -> None:
        """Initialise the data directory unless it already is."""

    @abstractmethod
    def _running(self) -> bool:
        """Whether our server is alive and accepting TCP connections."""
