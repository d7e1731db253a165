"""What Kafka and the schema registry share: a JVM process that we launch and supervise."""

from __future__ import annotations

import time
from abc import abstractmethod
from pathlib import Path

from headwater.stack.process import (
    env_port,
    file_lock,
    find_java,
    log_excerpt,
    pid_alive,
    port_open,
    rotate_log,
    start_detached,
    stop_pid,
)
from headwater.stack.service import HOST, LocalService, ServiceStatus, StackError, stack_home

# Both services fetch what they run from Maven Central with this plugin.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


class JvmService(LocalService):
    """A Java service installed under `home` and run as one detached process.

    The process is tracked by a pid file and by a port file holding the port it was started
    with (the environment may have changed since); it counts as ready once `_answers` gets a
    reply in its protocol. Subclasses provide the download, the command line and that probe.
    """

    product: str  # in the "needs Java" message, e.g. "Apicurio Registry"
    version: str  # also the name of the install directory
    label: str  # in start failures, e.g. "the registry"
    not_ready: str  # how a start timeout is put: "<label> <not_ready> within 120s"
    kind: str  # what a foreign process on the port must be for us to use it, e.g. "Kafka"
    port_variable: str
    default_port: int
    java_variable: str  # names a java executable to use instead of searching for one
    min_java: int
    start_timeout: float
    stop_timeout: float
    poll_interval: float  # between readiness probes while starting

    def __init__(self, home: Path | None = None) -> None:
        self.home = home if home is not None else stack_home() / self.name
        self.port = env_port(self.port_variable, self.default_port)

    # Where things live -------------------------------------------------------------------

    @property
    def install_dir(self) -> Path:
        return self.home / self.version

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    def _installed_marker(self) -> Path:
        # Written only after the download succeeded, so a half-done one is never taken as done.
        return self.install_dir / ".installed"

    def _port_file(self) -> Path:
        # The port the running process was started with: the environment may have changed since.
        return self.pid_file.with_suffix(".port")

    # LocalService ------------------------------------------------------------------------

    def install(self) -> None:
        if self._install_complete():
            return
        with file_lock(self.home / "install.lock"):
            if not self._installed_marker().exists():
                self._download()
            self._finish_install()

    def start(self) -> None:
        if self._up():
            return
        with file_lock(self.home / "start.lock"):
            self._start_locked()

    def stop(self) -> None:
        stop_pid(self.pid_file, timeout=self.stop_timeout)

    def status(self) -> ServiceStatus:
        if not self._installed_marker().exists():
            state, detail = "not-installed", ""
        elif self._up():
            state, detail = "up", f"log {self.log_file}"
        elif pid_alive(self.pid_file) and self._running_port() != self.port:
            state, detail = "down", f"runs on port {self._running_port()}, not {self.port}"
        elif pid_alive(self.pid_file):
            state, detail = "down", f"starting; log {self.log_file}"
        elif port_open(HOST, self.port) and self._answers(timeout=2.0):
            state, detail = "up", "not started by headwater"
        elif port_open(HOST, self.port):
            state, detail = "down", f"port {self.port} is taken by another program"
        else:
            state, detail = "down", f"log {self.log_file}"
        return ServiceStatus(self.name, state, self.address, self.urls(), detail)

    # Hooks -------------------------------------------------------------------------------

    @abstractmethod
    def urls(self) -> dict[str, str]:
        """Connection settings for task files."""

    @abstractmethod
    def _download(self) -> None:
        """Fetch the service into install_dir and write the installed marker last."""

    def _install_complete(self) -> bool:
        """Whether install() has nothing left to do (checked without the lock)."""
        return self._installed_marker().exists()

    def _finish_install(self) -> None:
        """Install steps after the download, under the install lock; none by default."""

    @abstractmethod
    def _prepare_launch(self, java: Path) -> list[str]:
        """Get configuration and data ready for a start; the command line to run."""

    @abstractmethod
    def _answers(self, timeout: float) -> bool:
        """Whether the service answers a request in its protocol on the port."""

    def _find_java(self) -> Path | None:
        return find_java(self.min_java, self.java_variable)

    # Start -------------------------------------------------------------------------------

    def _start_locked(self) -> None:
        if self._up():
            return  # another CLI or test worker started it while this one waited
        if pid_alive(self.pid_file):
            if self._running_port() != self.port:
                raise StackError(
                    f"{self.name} already runs on port {self._running_port()}; "
                    f"stop it before changing {self.port_variable}"
                )
            # Started earlier (maybe by another CLI run) and still booting: just wait for it.
            self._wait_ready()
            return
        if port_open(HOST, self.port):
            if self._answers(timeout=5.0):
                return  # the same kind of service, not started by headwater, serves this port
            raise StackError(
                f"port {self.port} is taken by something that is not {self.kind}; "
                f"free it or set {self.port_variable}"
            )
        self._launch()
        self._wait_ready()

    def _launch(self) -> None:
        """Install if needed, prepare and start the process, and note the port it got."""
        self.install()
        command = self._prepare_launch(self._java())
        rotate_log(self.log_file)
        start_detached(command, log_file=self.log_file, pid_file=self.pid_file, cwd=self.home)
        self._port_file().write_text(f"{self.port}\n")

    def _java(self) -> Path:
        java = self._find_java()
        if java is None:
            raise StackError(
                f"{self.product} {self.version} needs Java {self.min_java}+; install a JDK "
                f"or point {self.java_variable} at a java executable"
            )
        return java

    def _wait_ready(self) -> None:
        """Wait until the service answers; stop the process and raise on exit or timeout."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not pid_alive(self.pid_file):
                raise StackError(
                    f"{self.label} exited while starting (see {self.log_file}):\n"
                    f"{log_excerpt(self.log_file)}"
                )
            if port_open(HOST, self.port) and self._answers(timeout=2.0):
                return
            time.sleep(self.poll_interval)
        self.stop()
        raise StackError(
            f"{self.label} {self.not_ready} within {self.start_timeout:.0f}s "
            f"(see {self.log_file}):\n{log_excerpt(self.log_file)}"
        )

    def _running_port(self) -> int | None:
        try:
            return int(self._port_file().read_text())
        except (OSError, ValueError):
            return None

    def _up(self) -> bool:
        return (
            pid_alive(self.pid_file)
            and self._running_port() == self.port
            and port_open(HOST, self.port)
        )
