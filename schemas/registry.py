"""A small client for the Confluent schema-registry REST API (served by Confluent, Apicurio
under `/apis/ccompat/v7`, Redpanda and Karapace): register a schema under a subject, fetch a
schema by id. Ids and parsed schemas are cached; a registry is asked once per schema."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(RuntimeError):
    """The registry refused or could not be reached; the message names the fix."""


class SchemaRegistry:
    """Registers and looks up Avro schemas by subject and id."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout, headers={"Content-Type": _CONTENT_TYPE})
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = self._http.request(method, self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"schema registry at {self.url} is unreachable ({exc}); "
                "start it with `headwater stack up` or fix registry.url"
            ) from exc
        if resp.status_code >= 400:
            raise RegistryError(
                f"schema registry {method} {path} failed with {resp.status_code}: {resp.text[:300]}"
            )
        return resp.json()

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """The id of `schema` under `subject`, registering it if it is new there."""
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        with self._lock:
            cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        reply = self._request("POST", f"/subjects/{subject}/versions", {"schema": text})
        schema_id = int(reply["id"])
        with self._lock:
            self._ids[(subject, text)] = schema_id
            self._schemas[schema_id] = schema
        return schema_id

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The schema registered with `schema_id`."""
        with self._lock:
            cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        reply = self._request("GET", f"/schemas/ids/{schema_id}")
        parsed: dict[str, Any] = json.loads(reply["schema"])
        with self._lock:
            self._schemas[schema_id] = parsed
        return parsed

    def latest(self, subject: str) -> tuple[int, dict[str, Any]] | None:
        """The id and schema of the newest version under `subject`; None when it has none."""
        try:
            resp = self._http.get(f"{self.url}/subjects/{subject}/versions/latest")
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"schema registry at {self.url} is unreachable ({exc}); "
                "start it with `headwater stack up` or fix registry.url"
            ) from exc
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise RegistryError(
                f"schema registry GET {subject} latest failed with {resp.status_code}: "
                f"{resp.text[:300]}"
            )
        reply = resp.json()
        schema_id = int(reply["id"])
        parsed: dict[str, Any] = json.loads(reply["schema"])
        with self._lock:
            self._schemas[schema_id] = parsed
        return schema_id, parsed

    def ping(self) -> None:
        """Raise RegistryError unless the registry answers."""
        self._request("GET", "/subjects")
