"""The buffered frame receiver yields what aiormq's own yields, however the bytes arrive."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiormq.connection
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands, frame, header
from pamqp.body import ContentBody
from pamqp.heartbeat import Heartbeat

from asyncworker.broker import wire

ORIGINAL = aiormq.connection.FrameReceiver
if ORIGINAL is wire.BufferedFrameReceiver:  # installed by another test's broker
    ORIGINAL = wire.BufferedFrameReceiver.__mro__[1]


def _stream() -> bytes:
    parts = []
    for i in range(40):
        # RabbitMQ sends no body frame for an empty body (pamqp refuses one).
        body = bytes(random.Random(i).randrange(256) for _ in range(i * 37 + 1))
        parts += [
            frame.marshal(commands.Basic.Deliver("ctag", i + 1, False, "", "q"), 1),
            frame.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties(
                headers={"id": str(i), "n": i}, content_type="application/json")), 1),
            frame.marshal(ContentBody(body), 1),
            frame.marshal(Heartbeat(), 0),
        ]
    return b"".join(parts)


async def _read(receiver_class: Any, data: bytes, chunks: list[int],
                count: int | None = None) -> list[Any]:
    """``count`` frames (default: until the receiver ends) from ``data`` fed in ``chunks``."""
    reader = asyncio.StreamReader()
    receiver = receiver_class(reader)

    async def feed() -> None:
        offset = 0
        for size in chunks:
            reader.feed_data(data[offset:offset + size])
            offset += size
            await asyncio.sleep(0)
        reader.feed_data(data[offset:])
        reader.feed_eof()

    feeding = asyncio.ensure_future(feed())
    out: list[Any] = []
    try:
        if count is None:
            async for item in receiver:
                out.append(item)
        else:
            out = [await receiver.get_frame() for _ in range(count)]
    finally:
        await feeding
    return out


def _plain(value: Any) -> Any:
    """A frame (and the objects in it) as comparable plain values."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    names = list(getattr(value, "__dict__", {})) or list(getattr(value, "__slots__", []))
    if hasattr(value, "__dict__") or hasattr(value, "__slots__"):
        return type(value).__name__, {n: _plain(getattr(value, n)) for n in names}
    return value


@pytest.mark.parametrize("seed", range(8))
async def test_same_frames_as_aiormq_however_split(seed: int) -> None:
    data = _stream()
    rng = random.Random(seed)
    chunks = [rng.choice([1, 3, 7, 8, 50, 700, 5000]) for _ in range(200)]
    ours = await _read(wire.BufferedFrameReceiver, data, chunks, 160)
    theirs = await _read(ORIGINAL, data, [len(data)], 160)
    assert _plain(ours) == _plain(theirs)


async def test_ends_as_aiormq_does() -> None:
    """Ended between frames: iteration stops; ended while a frame is awaited: an error."""
    data = _stream()
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    assert len([f async for f in wire.BufferedFrameReceiver(reader)]) == 160
    reader = asyncio.StreamReader()
    receiver = wire.BufferedFrameReceiver(reader)
    waiting = asyncio.ensure_future(receiver.get_frame())
    await asyncio.sleep(0)
    reader.feed_eof()
    with pytest.raises(AMQPConnectionError):
        await waiting


async def test_cut_mid_frame_is_a_connection_error() -> None:
    data = _stream()
    with pytest.raises(AMQPConnectionError):
        await _read(wire.BufferedFrameReceiver, data[:-3], [])


async def test_protocol_header_and_bad_frame_end() -> None:
    with pytest.raises(ProtocolSyntaxError):
        await _read(wire.BufferedFrameReceiver, b"AMQP\x00\x00\x09\x01", [])
    bad = bytearray(frame.marshal(commands.Basic.Ack(1), 1))
    bad[-1] = 0
    with pytest.raises(InvalidFrameError):
        await _read(wire.BufferedFrameReceiver, bytes(bad), [])


def test_install_replaces_aiormq_receiver() -> None:
    assert wire.install()
    assert aiormq.connection.FrameReceiver is wire.BufferedFrameReceiver
