"""Installing Debian packages for the stack without letting apt start their services."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from headwater.stack.service import StackError
from headwater.stack.system import is_root, last_lines

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

# One apt run at a time within this process (`stack up` installs services from threads);
# other processes are covered by apt's own lock, which we wait on instead of failing.
_APT_LOCK = threading.Lock()
_apt_updated = False


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
