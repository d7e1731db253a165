"""PostgreSQL of the local stack: a private cluster serving as CDC source and migration target.

The cluster is our own (``initdb``), never Debian's default ``main`` cluster, so its dev-only
settings (logical decoding, trust auth on loopback, fsync off) cannot leak into a system
database. It listens on 127.0.0.1:5432 (``HEADWATER_PG_PORT`` overrides) with superuser
``postgres`` and no password, and holds the databases ``hw_source`` and ``hw_target``.

Where it lives (see `headwater.stack.system.service_dir`):

* run as root: ``/var/lib/headwater/postgres`` (``HEADWATER_SYSTEM_HOME`` overrides
  ``/var/lib/headwater``), owned by and run as the ``postgres`` system user, because
  PostgreSQL refuses to run as root and root's ``~/.cache`` (mode 700) is not traversable
  by that user;
* otherwise: ``stack_home()/postgres``, run as the invoking user.

Inside: ``data/`` (the cluster), ``run/`` (unix socket), ``postgres.log`` and ``stack.lock``
(held while one `stack up` creates or starts the cluster).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from headwater.stack.database import DATABASES, PackagedDatabase
from headwater.stack.process import pid_exists, port_open
from headwater.stack.service import HOST, StackError
from headwater.stack.system import current_user, file_tail, is_root, last_lines, run_as

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


class PostgresService(PackagedDatabase):
    """A private PostgreSQL cluster with logical decoding, on 127.0.0.1 (see module doc)."""

    name = "postgres"
    product = "PostgreSQL"
    packages = PG_PACKAGES
    owner = PG_USER
    port_variable = "HEADWATER_PG_PORT"
    default_port = 5432
    debian_stop = "Debian's own cluster: pg_ctlcluster 15 main stop"
    superuser = PG_USER
    source_scheme = "postgresql"
    target_scheme = "postgresql+psycopg"

    @property
    def socket_dir(self) -> Path:
        """Unix socket directory; our own, so a system cluster's /var/run/postgresql is not used."""
        return self.root / "run"

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

    def _start_server(self) -> None:
        """Configure and start the server, creating the cluster first if needed."""
        self._initialise()
        self._check_port_free()
        self._write_config()
        self._pg_ctl("start", "-l", str(self.log_file), "-w", "-t", "90")

    def _installed(self) -> bool:
        """Whether pg_ctl, initdb and psql of some major version are there."""
        return find_bindir() is not None

    def _initialised(self) -> bool:
        """Whether initdb has already run on the data directory."""
        return (self.data_dir / "PG_VERSION").exists()

    def _initialise(self) -> None:
        """initdb the data directory unless it already holds a cluster."""
        if self._initialised():
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
        if pid is None or not pid_exists(pid):
            return False
        return port_open(HOST, self.port)

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
