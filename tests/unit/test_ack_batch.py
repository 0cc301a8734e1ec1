"""Batched AMQP acks: one multiple-ack per settled prefix, never a tag the broker lost."""

from __future__ import annotations

import asyncio

from asyncworker.broker.amqp import AckBatch


class FakeChannel:
    """Records basic.ack frames and checks them as RabbitMQ would."""

    def __init__(self) -> None:
        self.is_closed = False
        self.frames: list[tuple[int, bool]] = []
        self.outstanding: set[int] = set()

    def deliver(self, count: int) -> None:
        start = max(self.outstanding | {f[0] for f in self.frames} | {0}) + 1
        self.outstanding |= set(range(start, start + count))

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        # RabbitMQ closes the channel (PRECONDITION_FAILED) on an unknown tag.
        assert tag in self.outstanding, f"unknown delivery tag {tag}"
        self.frames.append((tag, multiple))
        if multiple:
            self.outstanding -= {t for t in self.outstanding if t <= tag}
        else:
            self.outstanding.discard(tag)


async def _flushed(channel: FakeChannel, batch: AckBatch) -> None:
    for _ in range(50):
        await asyncio.sleep(0.006)  # past the 5 ms retry of a waiting ack
        if not batch.pending and not batch.waited:
            return
    raise AssertionError(f"acks left: {batch.pending}")


async def test_in_order_acks_become_one_frame() -> None:
    channel = FakeChannel()
    channel.deliver(50)
    batch = AckBatch(channel)
    for tag in range(1, 51):
        batch.ack(tag)
    await _flushed(channel, batch)
    assert channel.frames == [(50, True)]
    assert not channel.outstanding


async def test_ack_behind_an_unsettled_tag_is_sent_alone_then_the_prefix_skips_it() -> None:
    channel = FakeChannel()
    channel.deliver(3)
    batch = AckBatch(channel)
    batch.ack(2)  # tag 1 (a late-ack task, say) is still running
    await asyncio.sleep(0.02)
    assert channel.frames == [(2, False)]
    batch.ack(1)
    await _flushed(channel, batch)
    # Tag 2 is gone from the broker: the multiple ack must stop at 1.
    assert channel.frames == [(2, False), (1, True)]
    batch.ack(3)
    await _flushed(channel, batch)
    assert channel.frames[-1] == (3, True)
    assert not channel.outstanding


async def test_rejected_tags_let_the_floor_pass_without_being_acked() -> None:
    channel = FakeChannel()
    channel.deliver(3)
    batch = AckBatch(channel)
    batch.ack(1)
    batch.ack(2)
    channel.outstanding.discard(3)  # rejected with its own frame
    batch.settled(3)
    await _flushed(channel, batch)
    assert channel.frames == [(2, True)]
    assert batch.floor == 3


async def test_a_closed_channel_gets_no_frames() -> None:
    channel = FakeChannel()
    channel.deliver(2)
    channel.is_closed = True
    batch = AckBatch(channel)
    batch.ack(1)
    batch.ack(2)
    await _flushed(channel, batch)
    assert channel.frames == []


class FullWriteQueueChannel(FakeChannel):
    """The first frame's put waits for room (aiormq's bounded write queue is full);
    a later put, finding room, would go first."""

    def __init__(self) -> None:
        super().__init__()
        self.room = asyncio.Event()
        self.calls = 0

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.calls += 1
        if self.calls == 1:
            await self.room.wait()
        await super().basic_ack(tag, multiple, wait)


async def test_a_lone_ack_waiting_for_the_write_queue_is_not_overtaken() -> None:
    channel = FullWriteQueueChannel()
    channel.deliver(3)
    batch = AckBatch(channel)
    batch.ack(2)  # behind unsettled 1: sent alone, and its put waits
    for _ in range(20):
        await asyncio.sleep(0.003)
        if channel.calls:
            break
    batch.ack(1)
    batch.ack(3)  # now 1..3 are settled: one multiple ack of 3
    await asyncio.sleep(0.01)
    channel.room.set()
    await _flushed(channel, batch)
    await asyncio.sleep(0.01)
    assert channel.frames == [(2, False), (3, True)]
    assert not channel.outstanding
