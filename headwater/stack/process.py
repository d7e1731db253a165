"""Process helpers shared by the local stack services.

Every service of the stack is a plain local process: started detached so it outlives the CLI
that launched it, tracked by a pid file, probed through its TCP port and stopped by signal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from headwater.stack.service import StackError


@contextlib.contextmanager
def file_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (blocking), so that two CLIs or test workers
    starting the same service at once don't both launch it. Not reentrant: use one lock file
    per operation."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_detached(
    cmd: list[str],
    log_file: Path,
    pid_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `cmd` in its own session with output appended to `log_file`; return its pid.

    A new session keeps the process alive when the launching terminal or CLI exits, and
    keeps Ctrl-C in that terminal from reaching it. `env` is added to this process's
    environment. The pid file also records the process start time, so a pid reused by an
    unrelated process after a reboot is never mistaken for the service (nor signalled).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env} if env is not None else None
    with log_file.open("ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            cmd,
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    started = _proc_stat(proc.pid)
    start_time = started[1] if started else ""
    pid_file.write_text(f"{proc.pid} {start_time}\n")
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    """The pid recorded in `pid_file`, or None when there is no readable pid."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _recorded_start(pid_file: Path) -> str | None:
    """The process start time recorded beside the pid, None for pid files without one."""
    try:
        fields = pid_file.read_text().split()
    except OSError:
        return None
    return fields[1] if len(fields) > 1 else None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of `pid` from /proc, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # The command name in parentheses may hold spaces; fields after it are fixed.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _signal_probe(pid: int) -> bool | None:
    """Signal 0 to `pid`: False when there is no such process, None when it is another
    user's (it exists, but is ours neither to signal nor to reap), True otherwise."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True


def pid_exists(pid: int) -> bool:
    """Whether a process with `pid` exists (one of another user's counts)."""
    return _signal_probe(pid) is not False


def _alive(pid: int, start_time: str | None = None) -> bool:
    """Whether `pid` runs (a zombie counts as gone) and, if given, started at `start_time`."""
    probe = _signal_probe(pid)
    if probe is not True:
        return probe is None  # another user's process is taken as running
    # A child of this very process that exited stays a zombie until reaped; reap it here so
    # a service started and stopped within one Python process is not reported alive.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
    if waited == pid:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (not Linux): trust the signal probe
    state, started = stat
    if state in ("Z", "X"):
        return False
    return start_time is None or start_time == started


def run_logged(cmd: list[str], log_file: Path, cwd: Path | None = None) -> int:
    """Run `cmd` to its end with stdout and stderr written to `log_file`; its exit code."""
    with log_file.open("wb") as log:
        done = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False)
    return done.returncode


def pid_alive(pid_file: Path) -> bool:
    """Whether the process recorded in `pid_file` is running."""
    pid = read_pid(pid_file)
    return pid is not None and _alive(pid, _recorded_start(pid_file))


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll host:port until it accepts connections; False when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def stop_pid(pid_file: Path, timeout: float = 30) -> None:
    """SIGTERM the process of `pid_file` (its whole session), SIGKILL after `timeout` seconds.

    The pid file is removed once the process is gone; a missing or stale pid file is a no-op.
    """
    pid = read_pid(pid_file)
    if pid is None or not pid_alive(pid_file):
        pid_file.unlink(missing_ok=True)
        return
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.2)
    else:
        _signal(pid, signal.SIGKILL)
        # SIGKILL can't be refused, but a process stuck in the kernel dies only when it leaves.
        kill_deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < kill_deadline:
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group led by `pid` (start_detached made it a leader)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        # Not a group leader (started some other way): signal the process alone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def java_major(java: Path) -> int | None:
    """The feature release (17, 21, 25, ...) of the `java` executable, None if it won't run."""
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(match.group(1)) if match else None


def find_java(min_major: int, env_var: str) -> Path | None:
    """A `java` of at least release `min_major`: `$env_var`, `$JAVA_HOME`, PATH, /usr/lib/jvm.

    `env_var` names a java executable chosen by the user and is taken without question;
    the other places are tried in order so the machine's default JDK wins when new enough.
    """
    chosen = os.environ.get(env_var)
    if chosen:
        return Path(chosen)
    candidates: list[Path] = []
    if java_home := os.environ.get("JAVA_HOME"):
        candidates.append(Path(java_home) / "bin" / "java")
    if on_path := shutil.which("java"):
        candidates.append(Path(on_path))
    candidates += sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)
    for java in candidates:
        major = java_major(java) if java.is_file() else None
        if major is not None and major >= min_major:
            return java
    return None


def env_port(variable: str, default: int) -> int:
    """A port number from environment variable `variable`, or `default` when unset."""
    value = os.environ.get(variable)
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise StackError(f"{variable}={value!r} is not a port number")
    return int(value)


def rotate_log(log_file: Path) -> None:
    """Keep the previous run's log as `<name>.1`, so a log doesn't grow across restarts."""
    if log_file.exists() and log_file.stat().st_size > 0:
        log_file.replace(log_file.with_name(log_file.name + ".1"))


def log_excerpt(log_file: Path, lines: int = 15) -> str:
    """What an error message should quote from a log: its first ERROR lines, else its tail."""
    try:
        text = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # Exception and "Caused by" lines carry the reason (e.g. "Address already in use").
    markers = (" ERROR ", "Exception:", "Error:", "Caused by:")
    errors = [line for line in text if any(marker in line for marker in markers)]
    return "\n".join(errors[:lines] if errors else text[-lines:])
