"""Where the test services come from: containers through testcontainers when a Docker engine
answers (a laptop, a hosted CI), the local stack (`headwater stack up`) when none does (these
machines), or services already running. `HEADWATER_TEST_STACK=docker|local|external`
overrides the automatic choice."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the services the integration tests use."""

    kafka: str
    registry: str
    postgres: str  # a superuser URL to the `postgres` database, for creating test databases
    mariadb: str | None = None


LOCAL = Endpoints(
    kafka="127.0.0.1:9092",
    registry="http://127.0.0.1:8081/apis/ccompat/v7",
    postgres="postgresql://postgres@127.0.0.1:5432/postgres",
    mariadb="mysql://root@127.0.0.1:3306/",
)


def docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def choose() -> str:
    wanted = os.environ.get("HEADWATER_TEST_STACK", "auto")
    if wanted != "auto":
        return wanted
    return "docker" if docker_available() else "local"


@contextmanager
def local_stack() -> Iterator[Endpoints]:
    from headwater.stack import manager

    statuses = {
        s.name: s for s in manager.up(["kafka", "registry", "postgres"], echo=lambda _: None)
    }
    pg = statuses["postgres"].urls["source_url"].rsplit("/", 1)[0] + "/postgres"
    yield Endpoints(
        kafka=statuses["kafka"].urls["bootstrap_servers"],
        registry=statuses["registry"].urls["registry_url"],
        postgres=pg,
    )


@contextmanager
def docker_stack() -> Iterator[Endpoints]:
    """The same services as docker-compose.yml, as throwaway containers."""
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    with ExitStack() as stack:
        kafka = stack.enter_context(KafkaContainer("apache/kafka:4.1.1").with_kraft())
        postgres = PostgresContainer(
            "postgres:15", username="postgres", password="postgres", driver=None
        )
        postgres.with_command("postgres -c wal_level=logical -c max_replication_slots=20")
        stack.enter_context(postgres)
        registry = DockerContainer("apicurio/apicurio-registry:3.3.3").with_exposed_ports(8080)
        stack.enter_context(registry)
        wait_for_logs(registry, "Installed features", timeout=120)
        host = postgres.get_container_host_ip()
        yield Endpoints(
            kafka=kafka.get_bootstrap_server(),
            registry=f"http://{registry.get_container_host_ip()}:"
            f"{registry.get_exposed_port(8080)}/apis/ccompat/v7",
            postgres=f"postgresql://postgres:postgres@{host}:"
            f"{postgres.get_exposed_port(5432)}/postgres",
        )


@contextmanager
def endpoints() -> Iterator[Endpoints]:
    mode = choose()
    if mode == "docker":
        with docker_stack() as found:
            yield found
    elif mode == "local":
        with local_stack() as found:
            yield found
    elif mode == "external":
        yield LOCAL
    else:
        raise ValueError(f"HEADWATER_TEST_STACK={mode!r}: use docker, local or external")
