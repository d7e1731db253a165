"""MariaDB of the local stack: a private server whose row-based binlog feeds the CDC producers.

The server has its own data directory (``mariadb-install-db``) and config file, never
Debian's ``/var/lib/mysql`` or ``/etc/mysql``. It listens on 127.0.0.1:3306
(``HEADWATER_MARIADB_PORT`` overrides) and writes a full row-image binlog with full row
metadata (column names in the binlog), which binlog-reading CDC needs. User ``root`` has no
password, over TCP from 127.0.0.1 and over the unix socket; databases ``hw_source`` and
``hw_target`` exist.

Where it lives (see `headwater.stack.system.service_dir`):

* run as root: ``/var/lib/headwater/mariadb`` (``HEADWATER_SYSTEM_HOME`` overrides
  ``/var/lib/headwater``), owned by the ``mysql`` system user, which the server switches to
  (``--user=mysql``) because MariaDB refuses to run as root;
* otherwise: ``stack_home()/mariadb``, run as the invoking user.

Inside: ``my.cnf``, ``data/`` (with the binlog ``mariadb-bin.*``), ``run/`` (socket, the
server's own pid file), ``mariadbd.pid`` (the pid we track), ``mariadb.log`` (error log) and
``mariadbd.out`` (stdout/stderr), ``stack.lock`` (held while one `stack up` starts it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from headwater.stack.database import DATABASES, PackagedDatabase
from headwater.stack.process import pid_alive, port_open, start_detached, stop_pid, wait_for_port
from headwater.stack.service import HOST, StackError
from headwater.stack.system import (
    current_user,
    file_tail,
    is_root,
    last_lines,
    make_service_dir,
    run_as,
)

PACKAGES = ("mariadb-server",)
MYSQL_USER = "mysql"
START_TIMEOUT = 90.0

# Debian puts the server in /usr/sbin, which is not on a normal user's PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/bin"]
)


def _which(program: str) -> Path | None:
    """Full path of `program`, also looking in the sbin directories."""
    found = shutil.which(program, path=_SEARCH_PATH)
    return Path(found) if found else None


def _binaries() -> dict[str, Path] | None:
    """Paths of the server, the datadir initialiser and the client; None if any is missing."""
    names = {"server": "mariadbd", "install_db": "mariadb-install-db", "client": "mariadb"}
    found = {key: _which(program) for key, program in names.items()}
    if any(path is None for path in found.values()):
        return None
    return {key: path for key, path in found.items() if path is not None}


def _server_config(root: Path, port: int) -> str:
    """my.cnf of the dev server; rewritten on every start so a changed port takes effect."""
    return "\n".join(
        [
            "# Written by `headwater stack` on every start; edit the code, not this file.",
            "[mysqld]",
            f"datadir = {root / 'data'}",
            f"socket = {root / 'run' / 'mariadb.sock'}",
            f"pid-file = {root / 'run' / 'mariadbd.pid'}",
            f"log-error = {root / 'mariadb.log'}",
            f"port = {port}",
            f"bind-address = {HOST}",
            # Grants are by IP; no DNS look-ups on connect.
            "skip-name-resolve",
            # Level 1 drops the "Aborted connection" notes that every port probe of
            # `stack status` would otherwise add to the log.
            "log-warnings = 1",
            # What binlog CDC needs: every changed row in full, with column names.
            "log-bin = mariadb-bin",
            "server-id = 1",
            "binlog-format = ROW",
            "binlog-row-image = FULL",
            "binlog-row-metadata = FULL",
            "binlog-expire-logs-seconds = 259200",
            "character-set-server = utf8mb4",
            "collation-server = utf8mb4_unicode_ci",
            "innodb-buffer-pool-size = 128M",
            # A dev/test stack: speed over durability (a machine crash may lose the last
            # second of commits, which is acceptable for throwaway test data).
            "innodb-flush-log-at-trx-commit = 2",
            "sync-binlog = 0",
            "",
        ]
    )


# Run on every start through the socket: idempotent, and kept out of the binlog so that a
# CDC reader starting at the first binlog file sees only the data changes of tests.
_BOOTSTRAP_SQL = f"""\
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'root'@'{HOST}';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'{HOST}' WITH GRANT OPTION;
{"".join(f"CREATE DATABASE IF NOT EXISTS `{d}`;{chr(10)}" for d in DATABASES)}"""


class MariaDBService(PackagedDatabase):
    """A private MariaDB server with a row-based binlog, on 127.0.0.1 (see module doc)."""

    name = "mariadb"
    product = "MariaDB"
    packages = PACKAGES
    owner = MYSQL_USER
    port_variable = "HEADWATER_MARIADB_PORT"
    default_port = 3306
    debian_stop = "Debian's own server: service mariadb stop"
    superuser = "root"
    source_scheme = "mysql"
    target_scheme = "mysql+pymysql"

    @property
    def config_file(self) -> Path:
        """Our my.cnf, passed with --defaults-file so /etc/mysql is never read."""
        return self.root / "my.cnf"

    @property
    def socket(self) -> Path:
        """The server's unix socket."""
        return self.root / "run" / "mariadb.sock"

    @property
    def pid_file(self) -> Path:
        """The pid of the server process as we started it."""
        return self.root / "mariadbd.pid"

    def start(self) -> None:
        """Start the server if it is down, then ensure root over TCP and the databases."""
        if not self._running():
            with self._lock():
                self._start_locked()
        self._bootstrap()

    def stop(self) -> None:
        """Stop the server (SIGTERM: a clean InnoDB shutdown); data is kept."""
        stop_pid(self.pid_file, timeout=60)

    # --- internals ---------------------------------------------------------------------

    def _bins(self) -> dict[str, Path]:
        """The binaries, or a StackError naming the apt command."""
        bins = _binaries()
        if bins is None:
            raise StackError("MariaDB is not installed; run: apt-get install -y mariadb-server")
        return bins

    def _write_config(self) -> None:
        """Write my.cnf and make sure the socket directory exists for the server user."""
        make_service_dir(self.name, MYSQL_USER)
        run_dir = self.root / "run"
        run_dir.mkdir(exist_ok=True)
        self.config_file.write_text(_server_config(self.root, self.port))
        if is_root():
            shutil.chown(run_dir, MYSQL_USER, MYSQL_USER)

    def _user_args(self) -> list[str]:
        """--user=mysql when root: the server drops to it itself."""
        return [f"--user={MYSQL_USER}"] if is_root() else []

    def _installed(self) -> bool:
        """Whether the server, mariadb-install-db and the client are there."""
        return _binaries() is not None

    def _initialised(self) -> bool:
        """Whether mariadb-install-db has already created the system tables."""
        return (self.data_dir / "mysql").is_dir()

    def _initialise(self) -> None:
        """mariadb-install-db the datadir unless it already holds the system tables."""
        if self._initialised():
            return
        self._write_config()
        argv = [
            str(self._bins()["install_db"]),
            f"--defaults-file={self.config_file}",  # must come first
            *self._user_args(),
            # root@localhost with an empty password instead of unix_socket auth, so any OS
            # user (and our bootstrap) can log in over the socket.
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            # Grants by IP only, matching skip-name-resolve of the server.
            "--skip-name-resolve",
        ]
        # Run as ourselves: as root the script chowns the datadir and bootstraps as --user.
        result = run_as(current_user(), argv, cwd=self.root, timeout=300)
        if result.returncode != 0:
            output = last_lines(result.stderr or result.stdout)
            raise StackError(f"mariadb-install-db failed: {output}")

    def _running(self) -> bool:
        """Whether the server we started is alive and accepting TCP connections."""
        return pid_alive(self.pid_file) and port_open(HOST, self.port)

    def _start_locked(self) -> None:
        """Start the server unless another process did while we waited for the lock."""
        if self._running():
            return
        if pid_alive(self.pid_file):
            # Launched earlier and still starting (e.g. crash recovery): wait, don't relaunch.
            self._wait_or_fail()
            return
        self._initialise()
        self._check_port_free()
        self._launch()

    def _launch(self) -> None:
        """Start mariadbd detached and wait for its port; the error log names any failure."""
        self._write_config()
        argv = [
            str(self._bins()["server"]),
            f"--defaults-file={self.config_file}",
            *self._user_args(),
        ]
        start_detached(argv, self.root / "mariadbd.out", self.pid_file, cwd=self.root)
        self._wait_or_fail()

    def _wait_or_fail(self) -> None:
        """Wait for the server; stop it and show its error log when it does not come up."""
        if not self._wait_up():
            self.stop()
            raise StackError(
                f"MariaDB did not come up on {self.address}:\n"
                f"--- {self.log_file} ---\n{file_tail(self.log_file)}"
            )

    def _wait_up(self) -> bool:
        """Wait until the port answers, giving up early when the server process died."""
        waited = 0.0
        while waited < START_TIMEOUT:
            if not pid_alive(self.pid_file):
                return False
            if wait_for_port(HOST, self.port, 1.0):
                return True
            waited += 1.0
        return False

    def _bootstrap(self) -> None:
        """Ensure root@127.0.0.1 and the databases, through the socket as root."""
        argv = [
            str(self._bins()["client"]),
            "--no-defaults",
            "--protocol=socket",
            f"--socket={self.socket}",
            "--user=root",
            "--batch",
        ]
        result = run_as(current_user(), argv, cwd=self.root, stdin_text=_BOOTSTRAP_SQL, timeout=60)
        if result.returncode != 0:
            raise StackError(f"MariaDB bootstrap SQL failed: {last_lines(result.stderr)}")
