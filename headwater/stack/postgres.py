"""PostgreSQL of the local stack: a private cluster serving as CDC source and migration target.

The cluster is our own (``initdb``), never Debian's default ``main`` cluster, so its dev-only
settings (logical decoding, trust auth on loopback, fsync off) cannot leak into a system
database. It listens on 127.0.0.1:5432 (``HEADWATER_PG_PORT`` overrides) with superuser
``postgres`` and no password, and holds the databases ``hw_source`` and ``hw_target``.

Where it lives (see `service_dir`):

* run as root: ``/var/lib/headwater/postgres`` (``HEADWATER_SYSTEM_HOME`` overrides
  ``/var/lib/headwater``), owned by and run as the ``postgres`` system user, because
  PostgreSQL refuses to run as root and root's ``~/.cache`` (mode 700) is not traversable
  by that user;
* otherwise: ``stack_home()/postgres``, run as the invoking user.

Inside: ``data/`` (the cluster), ``run/`` (unix socket), ``postgres.log`` and ``stack.lock``
(held while one `stack up` creates or starts the cluster).

The module also holds the few system helpers that `headwater.stack.mariadb` shares: where a
system database lives, running a command as its service user, installing Debian packages.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from headwater.stack.process import file_lock, port_open
from headwater.stack.service import LocalService, ServiceStatus, StackError, stack_home

HOST = "127.0.0.1"
DATABASES = ("hw_source", "hw_target")
DEFAULT_SYSTEM_HOME = Path("/var/lib/headwater")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

# One apt run at a time within this process (`stack up` installs services from threads);
# other processes are covered by apt's own lock, which we wait on instead of failing.
_APT_LOCK = threading.Lock()
_apt_updated = False


# --- helpers shared with mariadb.py -------------------------------------------------------


def is_root() -> bool:
    """Whether we run as root, and so must run database servers as their system users."""
    return os.geteuid() == 0


def service_dir(service: str) -> Path:
    """Where `service` keeps data, socket and logs; nothing is created.

    As root it is ``/var/lib/headwater/<service>`` (or under ``HEADWATER_SYSTEM_HOME``),
    otherwise ``stack_home()/<service>``.
    """
    if not is_root():
        return stack_home() / service
    return Path(os.environ.get("HEADWATER_SYSTEM_HOME") or DEFAULT_SYSTEM_HOME) / service


def make_service_dir(service: str, owner: str) -> Path:
    """Create `service_dir(service)` if missing; as root, owned by system user `owner`."""
    root = service_dir(service)
    if root.exists():
        return root
    if not is_root():
        root.mkdir(parents=True)
        return root
    _make_traversable(root.parent)
    root.mkdir(mode=0o750)
    shutil.chown(root, owner, owner)
    return root


def _make_traversable(base: Path) -> None:
    """Create `base` with mode 755 whatever the umask; fail if a system user can't reach it.

    The servers run as system users, so every directory above their data must be
    traversable by others: root's home (mode 700) is the usual trap.
    """
    for directory in reversed([base, *base.parents]):
        if not directory.exists():
            directory.mkdir()
            directory.chmod(0o755)
        elif not directory.stat().st_mode & 0o001:
            raise StackError(
                f"{directory} is not traversable by other users, so the database servers "
                f"cannot reach {base}; set HEADWATER_SYSTEM_HOME to a directory they can reach"
            )


def current_user() -> str:
    """Name of the user we run as, for `run_as` calls that need no switch."""
    return pwd.getpwuid(os.geteuid()).pw_name


def run_as(
    owner: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float = 120,
    stdin_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`, as system user `owner` when we are root, capturing its output.

    `cwd` must be a directory `owner` can enter: tools like initdb fail in an unreadable one.
    """
    root = is_root()
    try:
        return subprocess.run(
            list(argv),
            cwd=cwd,
            input=stdin_text,
            stdin=None if stdin_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=owner if root else None,
            group=owner if root else None,
            extra_groups=[] if root else None,
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s") from None


def apt_install(packages: Sequence[str], what: str) -> None:
    """Install Debian `packages` non-interactively, without letting apt start their services.

    Only root can; anyone else gets a StackError naming the apt command to run.
    """
    command = "apt-get install -y " + " ".join(packages)
    if not is_root():
        raise StackError(f"{what} is not installed; run: sudo {command}")
    with _APT_LOCK, _services_not_started():
        _apt_update_once()
        _apt(["install", "-y", "--no-install-recommends", *packages], command)


def _apt_update_once() -> None:
    """Refresh the package lists once per process: a fresh machine may have none."""
    global _apt_updated
    if not _apt_updated:
        _apt(["update"], "apt-get update")
        _apt_updated = True


def _apt(args: list[str], shown: str) -> None:
    """Run apt-get with `args`, waiting for another apt to finish instead of failing."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = [
        "apt-get",
        "-q",
        "-o",
        "DPkg::Lock::Timeout=600",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        *args,
    ]
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise StackError(f"`{shown}` failed: {last_lines(result.stderr or result.stdout)}")


@contextmanager
def _services_not_started() -> Iterator[None]:
    """Keep invoke-rc.d from starting Debian's own mariadb/postgresql on our ports.

    A policy-rc.d that exits 101 tells invoke-rc.d "not allowed"; an existing one (as in
    container images) is left alone, one we placed is removed afterwards.
    """
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text(
        "#!/bin/sh\n# placed by headwater stack during apt-get install\nexit 101\n"
    )
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def last_lines(text: str, count: int = 15) -> str:
    """The last `count` non-empty lines of `text`, for error messages that name the cause."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:]) or "(no output)"


def file_tail(path: Path, count: int = 15) -> str:
    """The last lines of a log file, or a note that it is missing."""
    try:
        return last_lines(path.read_text(errors="replace"), count)
    except OSError:
        return f"(no log at {path})"


def port_from_env(variable: str, default: int) -> int:
    """A TCP port from environment `variable`, `default` when unset."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{variable}={raw!r} is not a TCP port")
    return int(raw)


# --- PostgreSQL -------------------------------------------------------------------------

PG_PACKAGES = ("postgresql-15",)
PG_USER = "postgres"
PG_BASE_DIR = Path("/usr/lib/postgresql")


def _pg_version_key(bindir: Path) -> int:
    """Major version of a Debian ``/usr/lib/postgresql/<major>/bin`` directory."""
    name = bindir.parent.name
    return int(name) if name.isdigit() else 0


def find_bindir(wanted_major: str | None = None) -> Path | None:
    """Directory of pg_ctl/initdb/psql: the `wanted_major` one if given, else the newest.

    Debian keeps each major version under /usr/lib/postgresql/<major>/bin and puts no pg_ctl
    on PATH; other systems do, so PATH is the fallback.
    """
    bindirs = sorted(
        (p.parent for p in PG_BASE_DIR.glob("*/bin/pg_ctl")), key=_pg_version_key, reverse=True
    )
    if wanted_major is not None:
        bindirs = [b for b in bindirs if b.parent.name == wanted_major]
    if bindirs:
        return bindirs[0]
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and wanted_major is None else None


def _server_settings(port: int, socket_dir: Path) -> str:
    """postgresql.conf lines of the dev cluster; rewritten on every start."""
    return "\n".join(
        [
            "# Written by `headwater stack` on every start; edit the code, not this file.",
            f"listen_addresses = '{HOST}'",
            f"port = {port}",
            f"unix_socket_directories = '{socket_dir}'",
            # Logical decoding is what the CDC producers read.
            "wal_level = logical",
            "max_replication_slots = 20",
            "max_wal_senders = 20",
            "shared_buffers = 128MB",
            "max_connections = 200",
            # A dev/test stack: speed over durability. A crash of the machine may lose or
            # corrupt this cluster's data, which is acceptable for throwaway test data.
            "fsync = off",
            "full_page_writes = off",
            # synchronous_commit stays on: logical decoding only sends WAL once flushed, so
            # async commit would delay every CDC event by up to ~0.6 s, while with fsync off
            # a synchronous flush costs next to nothing.
            "",
        ]
    )


# Trust on loopback only: a local dev stack, reachable from nowhere else.
_HBA = """\
# Written by `headwater stack` on every start; edit the code, not this file.
local   all             all                         trust
host    all             all         127.0.0.1/32    trust
local   replication     all                         trust
host    replication     all         127.0.0.1/32    trust
"""

# Creates each missing database; psql's \\gexec runs every row of the query as a statement,
# because CREATE DATABASE has no IF NOT EXISTS.
_CREATE_DATABASES = (
    "SELECT format('CREATE DATABASE %I', name) "
    f"FROM unnest(ARRAY[{', '.join(repr(d) for d in DATABASES)}]) AS name "
    "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = name) \\gexec\n"
)


class PostgresService(LocalService):
    """A private PostgreSQL cluster with logical decoding, on 127.0.0.1 (see module doc)."""

    name = "postgres"

    def __init__(self) -> None:
        self.port = port_from_env("HEADWATER_PG_PORT", 5432)

    @property
    def root(self) -> Path:
        """Directory holding data/, run/ and the log (see module doc)."""
        return service_dir(self.name)

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """Where the server logs (pg_ctl -l)."""
        return self.root / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """Unix socket directory; our own, so a system cluster's /var/run/postgresql is not used."""
        return self.root / "run"

    @property
    def address(self) -> str:
        """host:port the server listens on."""
        return f"{HOST}:{self.port}"

    def urls(self) -> dict[str, str]:
        """Connection URLs for task files: libpq for the source, SQLAlchemy for the target."""
        base = f"postgres@{HOST}:{self.port}"
        return {
            "source_url": f"postgresql://{base}/hw_source",
            "target_url": f"postgresql+psycopg://{base}/hw_target",
        }

    def install(self) -> None:
        """Install PostgreSQL 15 via apt when missing, then create the cluster once."""
        if find_bindir() is None:
            apt_install(PG_PACKAGES, "PostgreSQL")
        if not self._has_cluster():
            with self._lock():
                self._ensure_cluster()

    def start(self) -> None:
        """Start the cluster if it is down, then create the databases that are missing."""
        # Under the lock even when up: two `up`s creating the same database would collide.
        with self._lock():
            if not self._running():
                self._start_server()
            self._ensure_databases()

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: open sessions are disconnected); data is kept."""
        if self._running():
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def status(self) -> ServiceStatus:
        """State from the postmaster pid file and the port; changes nothing."""
        if find_bindir() is None:
            state, detail = "not-installed", "apt-get install -y " + " ".join(PG_PACKAGES)
        else:
            state = "up" if self._running() else "down"
            detail = f"data {self.data_dir}, log {self.log_file}"
        return ServiceStatus(self.name, state, self.address, self.urls(), detail)

    # --- internals ---------------------------------------------------------------------

    def _bindir(self) -> Path:
        """Binaries matching the cluster's major version (a newer install can't open it)."""
        version_file = self.data_dir / "PG_VERSION"
        wanted = version_file.read_text().strip() if version_file.exists() else None
        bindir = find_bindir(wanted)
        if bindir is None:
            need = f"postgresql-{wanted}" if wanted else PG_PACKAGES[0]
            raise StackError(
                f"PostgreSQL {wanted or ''} is not installed; run: apt-get install -y {need}"
            )
        return bindir

    def _lock(self) -> AbstractContextManager[None]:
        """Serialise initdb and start between CLIs or test workers doing `up` at once."""
        return file_lock(make_service_dir(self.name, PG_USER) / "stack.lock")

    def _start_server(self) -> None:
        """Configure and start the server, creating the cluster first if needed."""
        self._ensure_cluster()
        self._check_port_free()
        self._write_config()
        self._pg_ctl("start", "-l", str(self.log_file), "-w", "-t", "90")

    def _has_cluster(self) -> bool:
        """Whether initdb has already run on the data directory."""
        return (self.data_dir / "PG_VERSION").exists()

    def _ensure_cluster(self) -> None:
        """initdb the data directory unless it already holds a cluster."""
        if self._has_cluster():
            return
        initdb = self._bindir() / "initdb"
        result = run_as(
            PG_USER,
            [
                str(initdb),
                "-D",
                str(self.data_dir),
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                # Skipping the final fsync saves seconds; the cluster runs with fsync=off anyway.
                "--no-sync",
            ],
            cwd=self.root,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed: {last_lines(result.stderr or result.stdout)}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude 'headwater.conf'\n")

    def _write_config(self) -> None:
        """(Re)write our settings and pg_hba.conf, so a changed port or setting takes effect."""
        self.socket_dir.mkdir(exist_ok=True)
        files = {
            self.data_dir / "headwater.conf": _server_settings(self.port, self.socket_dir),
            self.data_dir / "pg_hba.conf": _HBA,
        }
        for path, text in files.items():
            path.write_text(text)
        if is_root():
            for path in (self.socket_dir, *files):
                shutil.chown(path, PG_USER, PG_USER)

    def _postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid (its first line), or None without one."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if re.fullmatch(r"\d+", first.strip()) else None

    def _running(self) -> bool:
        """Whether our postmaster is alive and accepting TCP connections."""
        pid = self._postmaster_pid()
        if pid is None or not _pid_exists(pid):
            return False
        return port_open(HOST, self.port)

    def _check_port_free(self) -> None:
        """Fail with a fix when something else (often Debian's own cluster) holds the port."""
        if port_open(HOST, self.port):
            raise StackError(
                f"port {self.port} is taken by another process; stop it (Debian's own "
                "cluster: pg_ctlcluster 15 main stop) or set HEADWATER_PG_PORT to a free port"
            )

    def _pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on our data directory as the postgres user."""
        argv = [str(self._bindir() / "pg_ctl"), *args[:1], "-D", str(self.data_dir), *args[1:]]
        result = run_as(PG_USER, argv, cwd=self.root)
        if result.returncode != 0:
            raise StackError(
                f"pg_ctl {args[0]} failed: {last_lines(result.stderr or result.stdout, 5)}\n"
                f"--- {self.log_file} ---\n{file_tail(self.log_file)}"
            )

    def _ensure_databases(self) -> None:
        """Create hw_source and hw_target if missing (one psql call; quick when present)."""
        psql = self._bindir() / "psql"
        argv = [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST]
        argv += ["-p", str(self.port), "-U", PG_USER, "-d", "postgres"]
        result = run_as(
            current_user(), argv, cwd=self.root, stdin_text=_CREATE_DATABASES, timeout=60
        )
        if result.returncode != 0:
            raise StackError(f"creating databases failed: {last_lines(result.stderr)}")


def _pid_exists(pid: int) -> bool:
    """Whether a process with `pid` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
