"""Kafka and the schema registry of the local stack, run for real: no mocks.

The services are installed and started in stack_home() and left running afterwards, as
`headwater stack up` would leave them, so later tests and people can use them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from headwater.stack.kafka import KafkaService
from headwater.stack.registry import RegistryService

pytestmark = pytest.mark.integration

CONTENT_TYPE = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def _record_schema(name: str, *extra_fields: str) -> str:
    fields = ",".join(['{"name":"id","type":"long"}', *extra_fields])
    return f'{{"type":"record","name":"{name}","namespace":"headwater.test","fields":[{fields}]}}'


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaService]:
    service = KafkaService()
    service.install()
    service.start()
    yield service


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryService]:
    service = RegistryService()
    service.install()
    service.start()
    yield service


def _consume_one(bootstrap: str, topic: str, timeout: float = 30.0) -> Message:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return message
        raise AssertionError(f"no message on {topic} within {timeout}s")
    finally:
        consumer.close()


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0, "message not delivered"


# Kafka -------------------------------------------------------------------------------------


def test_kafka_is_up_and_second_start_is_quick(kafka: KafkaService) -> None:
    began = time.monotonic()
    kafka.start()
    assert time.monotonic() - began < 1.0
    status = kafka.status()
    assert status.state == "up"
    assert status.urls["bootstrap_servers"] == kafka.bootstrap_servers


def test_kafka_produce_and_consume(kafka: KafkaService) -> None:
    topic = f"test-roundtrip-{uuid.uuid4().hex[:8]}"  # auto-created on first use
    _produce(kafka.bootstrap_servers, topic, b"k1", b"hello headwater")
    message = _consume_one(kafka.bootstrap_servers, topic)
    assert message.key() == b"k1"
    assert message.value() == b"hello headwater"


@pytest.mark.slow
def test_kafka_keeps_data_across_restart(kafka: KafkaService) -> None:
    topic = f"test-restart-{uuid.uuid4().hex[:8]}"
    _produce(kafka.bootstrap_servers, topic, b"k", b"kept")
    kafka.stop()
    assert kafka.status().state == "down"
    kafka.start()
    assert kafka.status().state == "up"
    assert _consume_one(kafka.bootstrap_servers, topic).value() == b"kept"


# Registry ----------------------------------------------------------------------------------


def test_registry_is_up_and_second_start_is_quick(registry: RegistryService) -> None:
    began = time.monotonic()
    registry.start()
    assert time.monotonic() - began < 1.0
    status = registry.status()
    assert status.state == "up"
    assert status.urls["registry_url"].endswith("/apis/ccompat/v7")


def test_registry_rest_register_fetch_and_check_compatibility(registry: RegistryService) -> None:
    subject = f"test-rest-{uuid.uuid4().hex[:8]}-value"
    schema = _record_schema("Rest")
    with httpx.Client(base_url=registry.url, headers=CONTENT_TYPE, timeout=10) as http:
        registered = http.post(f"/subjects/{subject}/versions", json={"schema": schema})
        assert registered.status_code == 200, registered.text
        schema_id = registered.json()["id"]
        assert isinstance(schema_id, int)

        fetched = http.get(f"/schemas/ids/{schema_id}")
        assert fetched.status_code == 200
        assert fetched.json()["schema"] == schema

        # Confluent's default rule is BACKWARD: a new field needs a default.
        with_default = _record_schema("Rest", '{"name":"note","type":"string","default":""}')
        without_default = _record_schema("Rest", '{"name":"note","type":"string"}')
        check = f"/compatibility/subjects/{subject}/versions/latest"
        assert http.post(check, json={"schema": with_default}).json()["is_compatible"] is True
        assert http.post(check, json={"schema": without_default}).json()["is_compatible"] is False


def test_registry_works_with_confluent_client_and_wire_format(
    kafka: KafkaService, registry: RegistryService
) -> None:
    client = SchemaRegistryClient({"url": registry.url, "timeout": 10})
    topic = f"test-avro-{uuid.uuid4().hex[:8]}"
    schema_str = _record_schema("Avro", '{"name":"name","type":"string"}')
    schema_id = client.register_schema(f"{topic}-value", Schema(schema_str, "AVRO"))
    assert client.get_schema(schema_id).schema_str == schema_str

    serializer = AvroSerializer(
        client,
        schema_str,
        conf={
            "auto.register.schemas": False,
            "subject.name.strategy": topic_subject_name_strategy,
        },
    )
    value_ctx = SerializationContext(topic, MessageField.VALUE)
    payload = serializer({"id": 7, "name": "seven"}, value_ctx)
    assert payload is not None
    # Confluent wire format: magic byte 0, then the 4-byte big-endian schema id.
    assert payload[0] == 0
    assert int.from_bytes(payload[1:5], "big") == schema_id

    _produce(kafka.bootstrap_servers, topic, b"7", payload)
    message = _consume_one(kafka.bootstrap_servers, topic)
    deserializer = AvroDeserializer(
        SchemaRegistryClient({"url": registry.url, "timeout": 10}),
        conf={"subject.name.strategy": topic_subject_name_strategy},
    )
    assert deserializer(message.value(), value_ctx) == {"id": 7, "name": "seven"}


@pytest.mark.slow
def test_registry_keeps_schemas_across_restart(registry: RegistryService) -> None:
    client = SchemaRegistryClient({"url": registry.url, "timeout": 10})
    subject = f"test-restart-{uuid.uuid4().hex[:8]}-value"
    schema_str = _record_schema("Kept")
    schema_id = client.register_schema(subject, Schema(schema_str, "AVRO"))
    registry.stop()
    assert registry.status().state == "down"
    registry.start()
    fresh = SchemaRegistryClient({"url": registry.url, "timeout": 10})  # no cached answers
    assert fresh.get_schema(schema_id).schema_str == schema_str
