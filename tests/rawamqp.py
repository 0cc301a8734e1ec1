"""A minimal AMQP 0-9-1 publisher over a plain socket, for messages no client library sends.

AMQP clients validate what they encode (text must be UTF-8, tables are built
from Python values). Tests of hostile input need the bytes themselves: a
content header whose ``content_type`` is not UTF-8, a header key that is not,
a table nested thousands deep, duplicate keys. Method frames are encoded by
pamqp; content headers are written from :class:`Props` byte by byte.
Publishes are confirmed (``confirm.select``) before :meth:`RawPublisher.wait_confirms` returns.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pamqp.frame
from pamqp import commands, constants

from asyncworker.broker.frames import encode_value

# Basic property flags, in field order.
_FLAGS = [("content_type", 15, "s"), ("content_encoding", 14, "s"), ("headers", 13, "t"),
          ("delivery_mode", 12, "o"), ("priority", 11, "o"), ("correlation_id", 10, "s"),
          ("reply_to", 9, "s"), ("expiration", 8, "s"), ("message_id", 7, "s")]


def short(raw: bytes | str) -> bytes:
    """A short string from raw bytes (no UTF-8 check)."""
    data = raw.encode() if isinstance(raw, str) else raw
    return struct.pack(">B", len(data)) + data


def long_text(raw: bytes | str) -> bytes:
    """A table value of type ``S`` from raw bytes (no UTF-8 check)."""
    data = raw.encode() if isinstance(raw, str) else raw
    return b"S" + struct.pack(">I", len(data)) + data


def table(items: list[tuple[bytes | str, Any]]) -> bytes:
    """A field table from (key, value) pairs: keys are raw bytes or text, values
    are Python values or already-encoded ``RawValue``s; duplicates are kept."""
    parts = []
    for key, value in items:
        parts.append(short(key))
        parts.append(value.data if isinstance(value, RawValue) else encode_value(value))
    data = b"".join(parts)
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class RawValue:
    """A table value given as its encoded bytes (type octet included)."""

    data: bytes


def nested_table(depth: int) -> RawValue:
    """A table nested ``depth`` deep (``{"k": {"k": ...}}``), as a table value."""
    inner = struct.pack(">I", 0)
    for _ in range(depth):
        entry = b"\x01kF" + inner
        inner = struct.pack(">I", len(entry)) + entry
    return RawValue(b"F" + inner)


@dataclass
class Props:
    """Basic properties; text fields may be raw bytes, ``headers`` a dict or raw table bytes."""

    content_type: bytes | str | None = None
    content_encoding: bytes | str | None = None
    headers: dict[str, Any] | bytes | None = None
    delivery_mode: int | None = 2
    priority: int | None = None
    correlation_id: bytes | str | None = None
    reply_to: bytes | str | None = None
    expiration: bytes | str | None = None
    message_id: bytes | str | None = None

    def encode(self) -> bytes:
        flags, parts = 0, []
        for name, bit, kind in _FLAGS:
            value = getattr(self, name)
            if value is None:
                continue
            flags |= 1 << bit
            if kind == "s":
                parts.append(short(value))
            elif kind == "o":
                parts.append(struct.pack(">B", value))
            elif isinstance(value, bytes):
                parts.append(value)
            else:
                parts.append(table(list(value.items())))
        return struct.pack(">H", flags) + b"".join(parts)


class RawPublisher:
    """One connection, one channel in confirm mode, publishing raw messages."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672),
                                             timeout=30)
        self.buffer = b""
        self.published = 0
        self.confirmed = 0
        self.sock.sendall(constants.AMQP + b"\x00\x00\x09\x01")
        self._expect(commands.Connection.Start)
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self._send(0, commands.Connection.StartOk(
            client_properties={"product": "rawamqp"}, mechanism="PLAIN",
            response=f"\0{user}\0{password}", locale="en_US"))
        tune = self._expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or 131072
        self._send(0, commands.Connection.TuneOk(channel_max=tune.channel_max,
                                                 frame_max=self.frame_max, heartbeat=0))
        vhost = unquote(parts.path[1:]) if parts.path not in ("", "/", "//") else "/"
        self._send(0, commands.Connection.Open(virtual_host=vhost))
        self._expect(commands.Connection.OpenOk)
        self._send(1, commands.Channel.Open())
        self._expect(commands.Channel.OpenOk)
        self._send(1, commands.Confirm.Select())
        self._expect(commands.Confirm.SelectOk)

    # -- frames ----------------------------------------------------------------
    def _send(self, channel: int, frame: Any) -> None:
        self.sock.sendall(pamqp.frame.marshal(frame, channel))

    def _read_frame(self) -> Any:
        while True:
            if len(self.buffer) >= 7:
                size = struct.unpack(">I", self.buffer[3:7])[0]
                if len(self.buffer) >= size + 8:
                    consumed, _, frame = pamqp.frame.unmarshal(self.buffer)
                    self.buffer = self.buffer[consumed:]
                    return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.buffer += chunk

    def _expect(self, kind: type) -> Any:
        while True:
            frame = self._read_frame()
            if isinstance(frame, kind):
                return frame
            self._check(frame)

    def _check(self, frame: Any) -> None:
        if isinstance(frame, (commands.Connection.Close, commands.Channel.Close)):
            raise ConnectionError(f"broker closed: {frame.reply_code} {frame.reply_text}")
        if isinstance(frame, commands.Basic.Nack):
            raise ConnectionError(f"publish nacked: {frame.delivery_tag}")
        if isinstance(frame, commands.Basic.Ack):
            self.confirmed = frame.delivery_tag if frame.multiple else max(
                self.confirmed, frame.delivery_tag)

    # -- publishing --------------------------------------------------------------
    def publish(self, routing_key: str, body: bytes, props: Props, exchange: str = "") -> None:
        """Publish one message: method, raw content header, body frames."""
        payload = struct.pack(">HHQ", 60, 0, len(body)) + props.encode()
        frames = [pamqp.frame.marshal(commands.Basic.Publish(
            exchange=exchange, routing_key=routing_key), 1),
            struct.pack(">BHI", constants.FRAME_HEADER, 1, len(payload)) + payload
            + constants.FRAME_END_CHAR]
        step = self.frame_max - 8
        for start in range(0, len(body), step):
            chunk = body[start:start + step]
            frames.append(struct.pack(">BHI", constants.FRAME_BODY, 1, len(chunk)) + chunk
                          + constants.FRAME_END_CHAR)
        self.sock.sendall(b"".join(frames))
        self.published += 1

    def wait_confirms(self) -> None:
        """Block until the broker has confirmed every publish so far."""
        while self.confirmed < self.published:
            self._check(self._read_frame())

    def close(self) -> None:
        try:
            self._send(0, commands.Connection.Close(reply_code=200, reply_text="bye",
                                                    class_id=0, method_id=0))
            self._expect(commands.Connection.CloseOk)
        except OSError:
            pass
        finally:
            self.sock.close()
