"""A Confluent-compatible schema registry as a local process: Apicurio Registry on 127.0.0.1.

Apicurio publishes its ready-built Quarkus application on Maven Central (the `all` tar.gz of
io.apicurio:apicurio-registry-app), so Maven fetches it and no build is needed. Schemas are kept
in an H2 database file under stack_home(), so ids survive restarts. The Confluent API lives at
/apis/ccompat/v7; ids it hands out work in the Confluent wire format.

Apicurio 3 is compiled for Java 21. With Java 25 the install also records an AOT cache
(JEP 514/515) in a training run, which roughly halves the start time.
"""

from __future__ import annotations

import json
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from headwater.stack.jvm import DEPENDENCY_PLUGIN, JvmService
from headwater.stack.process import (
    java_major,
    log_excerpt,
    pid_alive,
    run_logged,
    start_detached,
    stop_pid,
)
from headwater.stack.service import HOST, StackError

REGISTRY_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{REGISTRY_VERSION}:tar.gz:all"
DEFAULT_PORT = 8081
CCOMPAT_PATH = "/apis/ccompat/v7"
MIN_JAVA = 21  # the registry's classes are compiled for release 21
AOT_JAVA = 25  # one-step AOT cache creation (-XX:AOTCacheOutput) came with Java 25
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
TRAINING_EXIT_TIMEOUT = 180.0  # the JVM writes the AOT cache (~100 MB) while exiting
# C1 only: a local registry needs quick start far more than peak throughput. The same options
# must be used for the training run, or the JVM would refuse the AOT cache.
JVM_OPTIONS = ["-Xms128m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
JSON_TYPE = "application/vnd.schemaregistry.v1+json"
TRAINING_SCHEMA = (
    '{"type":"record","name":"Warmup","namespace":"headwater",'
    '"fields":[{"name":"id","type":"long"}]}'
)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for the throwaway training run)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _http(method: str, url: str, body: dict[str, str] | None = None) -> tuple[int, str]:
    """One HTTP request with the Confluent content type; (status, body), (0, "") if refused."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", JSON_TYPE)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


class RegistryService(JvmService):
    """Apicurio Registry 3 with H2 file storage, serving the Confluent schema registry API."""

    name = "registry"
    product = "Apicurio Registry"
    version = REGISTRY_VERSION
    label = "the registry"
    not_ready = "did not answer"
    kind = "a schema registry"
    port_variable = "HEADWATER_REGISTRY_PORT"
    default_port = DEFAULT_PORT
    java_variable = "HEADWATER_REGISTRY_JAVA"
    min_java = MIN_JAVA
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT
    poll_interval = 0.2

    def __init__(self, home: Path | None = None) -> None:
        super().__init__(home)
        self._java_found: Path | None = None
        self._java_majors: dict[Path, int] = {}

    @property
    def app_dir(self) -> Path:
        return self.install_dir / "quarkus-app"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{CCOMPAT_PATH}"

    def urls(self) -> dict[str, str]:
        return {"registry_url": self.url}

    def _aot_cache(self, java: Path) -> Path | None:
        """The AOT cache file for this JVM, None when the JVM is too old to use one."""
        major = self._java_majors.get(java)
        if major is None:
            major = self._java_majors[java] = java_major(java) or 0
        if major < AOT_JAVA:
            return None
        return self.install_dir / f"registry-jdk{major}.aot"

    # JvmService --------------------------------------------------------------------------

    def _install_complete(self) -> bool:
        # No JDK probing once the download and the AOT attempt are done.
        return self._installed_marker().exists() and any(self.install_dir.glob("*.aot*"))

    def _finish_install(self) -> None:
        java = self._find_java()
        if java is not None:
            self._ensure_aot_cache(java)

    def _prepare_launch(self, java: Path) -> list[str]:
        """Make the data directory; the command that runs on the H2 file database there."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self._command(java, self._settings(self.port, self._database_url()))

    def _answers(self, timeout: float) -> bool:
        """Whether the Confluent API answers (within _http's own timeout, not `timeout`)."""
        return _http("GET", f"{self.url}/subjects")[0] == 200

    def _find_java(self) -> Path | None:
        # Remembered: probing JDKs runs `java -version` for each candidate.
        if self._java_found is None:
            self._java_found = super()._find_java()
        return self._java_found

    # Install -----------------------------------------------------------------------------

    def _download(self) -> None:
        """Fetch the application archive with Maven and unpack it into app_dir."""
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven is needed to fetch the registry: apt-get install maven")
        self.install_dir.mkdir(parents=True, exist_ok=True)
        mvn_log = self.install_dir / "mvn.log"
        cmd = [
            mvn, "-q", "-B", f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={ARTIFACT}",
            f"-DoutputDirectory={self.install_dir}",
        ]  # fmt: skip
        failed = run_logged(cmd, mvn_log, cwd=self.install_dir) != 0
        archive = self.install_dir / f"apicurio-registry-app-{REGISTRY_VERSION}-all.tar.gz"
        if failed or not archive.exists():
            raise StackError(
                f"Maven could not fetch {ARTIFACT} (see {mvn_log}):\n{log_excerpt(mvn_log)}"
            )
        shutil.rmtree(self.app_dir, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(self.app_dir, filter="data")
        # Maven's local repository keeps a copy; a second one here would only take space.
        archive.unlink()
        self._installed_marker().write_text(f"{ARTIFACT}\n")

    def _ensure_aot_cache(self, java: Path) -> None:
        """Record the AOT cache once: run the registry on a throwaway in-memory database,
        exercise the Confluent API, and stop it, whereupon the JVM writes the cache."""
        cache = self._aot_cache(java)
        if cache is None or cache.exists():
            return
        failed = cache.with_name(cache.name + ".failed")
        if failed.exists():
            return  # tried before: don't slow every install down; delete the file to retry
        port = _free_port()
        settings = self._settings(port, "jdbc:h2:mem:training")
        pid_file = self.install_dir / "training.pid"
        log_file = self.install_dir / "training.log"
        log_file.unlink(missing_ok=True)
        start_detached(
            self._command(java, settings, aot=f"-XX:AOTCacheOutput={cache}"),
            log_file=log_file,
            pid_file=pid_file,
            cwd=self.install_dir,
        )
        try:
            self._exercise(port, pid_file)
        finally:
            stop_pid(pid_file, timeout=TRAINING_EXIT_TIMEOUT)
        if not cache.exists():
            # A cache is only an optimisation: without one the registry starts all the same.
            failed.write_text(f"no AOT cache was written; see {log_file}\n")

    def _exercise(self, port: int, pid_file: Path) -> None:
        """Wait for the training run and send it the requests a client sends."""
        base = f"http://{HOST}:{port}{CCOMPAT_PATH}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and pid_alive(pid_file):
            if _http("GET", f"{base}/subjects")[0] == 200:
                break
            time.sleep(0.3)
        else:
            return
        body = {"schema": TRAINING_SCHEMA}
        _http("POST", f"{base}/subjects/warmup-value/versions", body)
        _http("GET", f"{base}/schemas/ids/1")
        _http("POST", f"{base}/subjects/warmup-value", body)
        _http("POST", f"{base}/compatibility/subjects/warmup-value/versions/latest", body)
        _http("GET", f"{base}/subjects/warmup-value/versions/latest")
        _http("GET", f"{base}/config")

    # Launch ------------------------------------------------------------------------------

    def _database_url(self) -> str:
        return f"jdbc:h2:file:{self.data_dir / 'registry'}"

    def _settings(self, port: int, database_url: str) -> dict[str, str]:
        """The registry's configuration, passed as system properties."""
        return {
            "quarkus.http.host": HOST,
            "quarkus.http.port": str(port),
            # Health and metrics get their own listener; a random port avoids clashes on 9000.
            "quarkus.management.host": HOST,
            "quarkus.management.port": "0",
            "quarkus.log.console.format": "%d{yyyy-MM-dd HH:mm:ss} %p [%c{2.}] (%t) %m%n",
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.url": database_url,
            # 20 pooled connections at start (the default) only slow a one-user registry down.
            "apicurio.datasource.jdbc.initial-size": "2",
            "apicurio.datasource.jdbc.min-size": "2",
            "apicurio.datasource.jdbc.max-size": "20",
            # Confluent's registry checks BACKWARD compatibility unless told otherwise.
            "apicurio.rules.global.compatibility": "BACKWARD",
        }

    def _command(self, java: Path, settings: dict[str, str], aot: str | None = None) -> list[str]:
        if aot is None:
            cache = self._aot_cache(java)
            aot = f"-XX:AOTCache={cache}" if cache is not None and cache.exists() else None
        properties = [f"-D{key}={value}" for key, value in settings.items()]
        jar = str(self.app_dir / "quarkus-run.jar")
        return [str(java), *JVM_OPTIONS, *([aot] if aot else []), *properties, "-jar", jar]
