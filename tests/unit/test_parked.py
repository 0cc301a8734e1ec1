"""The parked plugin: which worker records and lists parked tasks, and how
``scheduled`` joins them to the tasks held in memory."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from asyncworker.parked import plugin as parked_plugin
from asyncworker.parked.plugin import ParkedPlugin
from asyncworker.parked.store import MemoryParkedStore, ParkedTask

NODE = "w1@host"


class FakeWorker(SimpleNamespace):
    """What the plugin reads of a worker (weakly referenced, as a real one is)."""

    __hash__ = object.__hash__


def worker(can_park: bool = True, hold_limit: float | None = 600.0) -> Any:
    return FakeWorker(
        broker=SimpleNamespace(can_park=can_park),
        settings=SimpleNamespace(worker_eta_hold_limit=hold_limit, result_backend=None,
                                 result_batch_size=10, worker_nodename=NODE))


def scheduled_entry(task_id: str) -> dict[str, Any]:
    return {"eta": "2030-01-01T00:00:00+00:00", "priority": 0, "request": {"id": task_id}}


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the core ``scheduled`` command lists from memory."""
    entries: list[dict[str, Any]] = []

    async def from_memory(worker: Any, **_: Any) -> list[dict[str, Any]]:
        return list(entries)

    monkeypatch.setattr(parked_plugin, "held_in_memory", from_memory)
    return entries


def test_only_a_worker_that_can_park_gets_a_store() -> None:
    plugin = ParkedPlugin()
    assert plugin.store(worker(can_park=False)) is None
    assert plugin.store(worker(hold_limit=None)) is None
    parks = worker()
    store = plugin.store(parks)
    assert isinstance(store, MemoryParkedStore)
    assert plugin.store(parks) is store  # one per worker
    assert len(list(plugin.hooks(parks))) == len(list(plugin.services(parks))) == 1
    assert list(plugin.hooks(worker(can_park=False))) == []


async def test_scheduled_lists_held_tasks_then_parked_ones_not_held(
        held: list[dict[str, Any]]) -> None:
    plugin, w = ParkedPlugin(), worker()
    store = plugin.store(w)
    assert store is not None
    now = time.time()
    held.append(scheduled_entry("held"))
    for task_id, node, returns_at in (("later", NODE, now + 60), ("sooner", NODE, now + 30),
                                      ("held", NODE, now + 10),  # back and held here
                                      ("elsewhere", "w2@host", now + 30),
                                      ("back", NODE, now - 1)):
        await store._write_many([ParkedTask(task_id, node, returns_at,
                                            scheduled_entry(task_id))])
    listed = await plugin.scheduled(w)
    assert [e["request"]["id"] for e in listed] == ["held", "sooner", "later"]


async def test_scheduled_without_a_store_is_the_core_command(
        held: list[dict[str, Any]]) -> None:
    held.append(scheduled_entry("held"))
    assert await ParkedPlugin().scheduled(worker(can_park=False)) == held


async def test_an_unreadable_store_lists_what_is_held(held: list[dict[str, Any]]) -> None:
    plugin, w = ParkedPlugin(), worker()
    held.append(scheduled_entry("held"))

    async def down(node: str, now: float | None = None) -> list[ParkedTask]:
        raise ConnectionRefusedError("database down")

    store = plugin.store(w)
    assert store is not None
    store.listing = down  # type: ignore[method-assign]
    assert await plugin.scheduled(w) == held
