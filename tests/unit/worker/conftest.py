"""Fixtures of the worker unit tests: a fresh app kit, a hook recorder, a memory broker."""

from __future__ import annotations

import pytest

from asyncworker import App
from asyncworker.broker.memory import MemoryBroker

from .helpers import Kit, RecordingHooks, make_kit


@pytest.fixture
def kit() -> Kit:
    """A new App with the kit's tasks (``t.add``, ``t.fail``, ``t.block`` ...)."""
    return make_kit()


@pytest.fixture
def app(kit: Kit) -> App:
    """The kit's App."""
    return kit.app


@pytest.fixture
def rec() -> RecordingHooks:
    """A hooks subscriber that records every call."""
    return RecordingHooks()


@pytest.fixture
def broker() -> MemoryBroker:
    """A fresh in-memory broker (not consuming)."""
    return MemoryBroker()
