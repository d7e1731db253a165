"""The system side of the database servers: where they live and running commands as their users.

As root the servers run as their system users (``postgres``, ``mysql``), because both refuse to
run as root, and live under ``/var/lib/headwater`` (``HEADWATER_SYSTEM_HOME`` overrides), since
root's ``~/.cache`` (mode 700) is not traversable by those users. Anyone else runs them as
themselves under ``stack_home()``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from headwater.stack.service import StackError, stack_home

DEFAULT_SYSTEM_HOME = Path("/var/lib/headwater")


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
