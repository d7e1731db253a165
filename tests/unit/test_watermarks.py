"""Watermarks of a partition whose leader is not elected yet (a topic created a moment
ago): asked again until the deadline, other errors raised at once."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from schemas.watermarks import watermarks


class Answers:
    """Stands in for the one Consumer method `watermarks` calls: raises the queued errors,
    then returns the watermarks."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, _where: TopicPartition, **_kw: Any) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 42


def test_a_partition_without_a_leader_yet_is_asked_again() -> None:
    answers = Answers(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    got = watermarks(answers, TopicPartition("t", 0), time.monotonic() + 5)  # type: ignore[arg-type]
    assert got == (3, 42) and answers.calls == 3


def test_other_errors_and_a_passed_deadline_raise() -> None:
    broken = Answers(KafkaError._TRANSPORT)
    with pytest.raises(KafkaException):
        watermarks(broken, TopicPartition("t", 0), time.monotonic() + 5)  # type: ignore[arg-type]
    assert broken.calls == 1
    leaderless = Answers(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 100)
    started = time.monotonic()
    with pytest.raises(KafkaException):
        watermarks(leaderless, TopicPartition("t", 0), started + 0.3)  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 5
