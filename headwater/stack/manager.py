"""Brings the services of the local stack up and down together, as `headwater stack` does.

`up` installs and starts every service in its own thread: most of the time goes into
downloads, apt and JVM start-up, which overlap well. No service needs another to start (the
registry keeps its schemas in its own H2 file, not in Kafka). Only the installs of Kafka and
the registry take turns, because both fetch through Maven into the same local repository,
which Maven 3.8 does not lock; apt installs take turns inside `apt_install`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from headwater.stack.kafka import KafkaService
from headwater.stack.mariadb import MariaDBService
from headwater.stack.postgres import PostgresService
from headwater.stack.registry import RegistryService
from headwater.stack.service import LocalService, ServiceStatus, StackError

Echo = Callable[[str], None]

_MAVEN_LOCK = threading.Lock()
# service name -> lock its install() holds, for installers that must not run side by side.
INSTALL_LOCKS = {"kafka": _MAVEN_LOCK, "registry": _MAVEN_LOCK}


def all_services() -> list[LocalService]:
    """Every service of the stack, in start order."""
    return [KafkaService(), RegistryService(), PostgresService(), MariaDBService()]


def select(names: Sequence[str] | None) -> list[LocalService]:
    """The services named (all when None or empty), in start order; unknown names fail."""
    services = all_services()
    if not names:
        return services
    known = [service.name for service in services]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise StackError(f"unknown service {', '.join(unknown)}; known: {', '.join(known)}")
    return [service for service in services if service.name in names]


def up(names: Sequence[str] | None = None, echo: Echo = print) -> list[ServiceStatus]:
    """Install and start the named services (all by default); report where each listens.

    Services start in parallel; all are attempted even when one fails, and the failures
    are raised together as one StackError afterwards.
    """
    services = select(names)
    with ThreadPoolExecutor(max_workers=len(services), thread_name_prefix="stack-up") as pool:
        futures = [pool.submit(_up_one, service, echo) for service in services]
    statuses: list[ServiceStatus] = []
    errors: list[str] = []
    for service, future in zip(services, futures, strict=True):
        error = future.exception()
        if error is None:
            statuses.append(future.result())
        elif isinstance(error, StackError):
            errors.append(f"{service.name}: {error}")
        else:
            raise error  # a bug, not a condition the user can fix: keep the traceback
    if errors:
        raise StackError("\n".join(errors))
    return statuses


def down(names: Sequence[str] | None = None, echo: Echo = print) -> None:
    """Stop the named services (all by default) in reverse start order; data is kept."""
    errors: list[str] = []
    for service in reversed(select(names)):
        try:
            service.stop()
        except StackError as error:
            errors.append(f"{service.name}: {error}")
            continue
        echo(f"{service.name} stopped")
    if errors:
        raise StackError("\n".join(errors))


def status(names: Sequence[str] | None = None) -> list[ServiceStatus]:
    """State, address and URLs of the named services (all by default); changes nothing."""
    return [service.status() for service in select(names)]


def _up_one(service: LocalService, echo: Echo) -> ServiceStatus:
    """Install and start one service, then report its address and how long it took."""
    began = time.monotonic()
    lock = INSTALL_LOCKS.get(service.name)
    if lock is None:
        service.install()
    else:
        with lock:
            service.install()
    service.start()
    state = service.status()
    echo(f"{service.name} {state.state} on {state.address} ({time.monotonic() - began:.1f}s)")
    return state
