"""broker_transport_options: unknown names are errors, values are coerced."""

from __future__ import annotations

import pytest

from asyncworker.broker import options
from asyncworker.exceptions import ImproperlyConfigured

KNOWN = {"visibility_timeout": 3600.0, "polling_interval": 1.0, "sep": "\x06\x16",
         "predefined_queues": None, "fanout_prefix": True, "max_steps": 4}


def test_defaults_are_kept_and_given_values_coerced() -> None:
    got = options.read({"visibility_timeout": "30", "max_steps": "2", "fanout_prefix": "no"},
                       KNOWN, "redis")
    assert got["visibility_timeout"] == 30.0 and isinstance(got["visibility_timeout"], float)
    assert got["max_steps"] == 2
    assert got["fanout_prefix"] is False
    assert got["polling_interval"] == 1.0
    assert got["sep"] == "\x06\x16"


def test_an_unknown_option_is_an_error_naming_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="visibilty_timeout"):
        options.read({"visibilty_timeout": 10}, KNOWN, "redis")


def test_a_value_of_the_wrong_type_is_an_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="polling_interval"):
        options.read({"polling_interval": "often"}, KNOWN, "redis")
    with pytest.raises(ImproperlyConfigured, match="max_steps"):
        options.read({"max_steps": True}, KNOWN, "redis")


def test_none_defaults_accept_any_value() -> None:
    queues = {"celery": {"url": "https://sqs.example/celery"}}
    assert options.read({"predefined_queues": queues}, KNOWN, "sqs")["predefined_queues"] == queues


def test_each_transport_checks_its_options_when_created() -> None:
    from asyncworker.broker import create
    from asyncworker.settings import Settings

    # Celery's py-amqp options carry over (no effect); anything else is an error.
    create(Settings(broker_transport_options={"confirm_publish": True, "max_retries": 3}))
    with pytest.raises(ImproperlyConfigured, match="visibility_timeout"):
        create(Settings(broker_transport_options={"visibility_timeout": 10}))
    # kombu's Redis sweep throttle is accepted; a typo is not.
    create(Settings(broker_url="redis://127.0.0.1:6379/5",
                    broker_transport_options={"unacked_restore_throttle": 1}))
    with pytest.raises(ImproperlyConfigured, match="visibilty_timeout"):
        create(Settings(broker_url="redis://127.0.0.1:6379/5",
                        broker_transport_options={"visibilty_timeout": 1}))
