"""The faust transform app is wired to the exactly-once transport (no Kafka needed): the
broker URL scheme selects it, and the app runs in faust's exactly_once mode."""

from __future__ import annotations

import faust
from faust.transport import by_url

from headwater.config import TaskConfig
from transforms import faust_eos
from transforms.faust_app import app_settings
from transforms.outputs import transform_group


def test_scheme_selects_the_exactly_once_transport() -> None:
    faust_eos.register()
    transport = by_url(f"{faust_eos.SCHEME}://127.0.0.1:9092")
    assert transport is faust_eos.Transport
    assert transport.Producer is faust_eos.SourcePartitionProducer
    assert transport.Consumer is faust_eos.GuardedConsumer
    assert transport.TransactionManager is faust_eos.GuardedTransactionManager


def test_app_settings_put_the_app_in_exactly_once_mode() -> None:
    faust_eos.register()
    task = TaskConfig.model_validate(
        {"name": "unit", "table_mappings": {"rules": []}, "kafka": {"bootstrap_servers": "a:1,b:2"}}
    )
    settings = app_settings(task)
    assert settings["broker"] == [f"{faust_eos.SCHEME}://a:1", f"{faust_eos.SCHEME}://b:2"]
    app = faust.App(transform_group(task), **settings)
    app.in_worker = True  # what faust_app does instead of running a faust.Worker
    assert app.in_transaction
    assert app.conf.id == "headwater-unit-transform"  # the group `headwater status` reads
    assert isinstance(app.transport, faust_eos.Transport)


def test_each_producer_keeps_its_own_transactional_producers() -> None:
    # faust declares these dicts on the class: a restarted app in the same process would
    # find the stopped producers of the one before.
    faust_eos.register()
    task = TaskConfig.model_validate({"name": "unit", "table_mappings": {"rules": []}})
    first, second = (faust.App(transform_group(task), **app_settings(task)) for _ in range(2))
    one, other = first.producer, second.producer
    assert isinstance(one, faust_eos.SourcePartitionProducer)
    assert isinstance(other, faust_eos.SourcePartitionProducer)
    assert one._transaction_producers is not other._transaction_producers
    assert one._trn_locks is not other._trn_locks
