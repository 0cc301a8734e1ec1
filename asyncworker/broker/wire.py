"""Reading AMQP frames off the socket: what has arrived, cut into frames, at once.

aiormq reads each frame with three ``readexactly`` calls under an
``asyncio.Lock``, copying it through a ``BytesIO``: a dozen awaits and copies
for every message (a method, a header and a body frame), which was the
largest single cost of the AMQP client in a noop worker's profile.
:class:`BufferedFrameReceiver` reads whatever the socket has (up to 64 KiB),
keeps it, and hands out one decoded frame per call without awaiting until it
runs out of whole frames. Frames, errors and end of stream are what aiormq's
receiver gives: the same pamqp decode, ``ProtocolSyntaxError`` for a
protocol header where a frame should be, ``InvalidFrameError`` for an
undecodable frame, ``AMQPConnectionError`` for a socket error or a stream
that ends while a frame is awaited, and the end of iteration when the stream
had already ended between frames.

:func:`install` puts it in place of aiormq's ``FrameReceiver`` (the one name
aiormq's connection looks up when it connects), on the aiormq major version it
was written against only.
"""

from __future__ import annotations

import asyncio
from importlib import metadata
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.exceptions import (
    AMQPConnectionError,
    InvalidFrameError,
    ProtocolSyntaxError,
)
from pamqp.exceptions import PAMQPException

from ..logging import get_logger

log = get_logger("broker")

#: The aiormq major version the receiver is written against.
AIORMQ_MAJOR = "7"
#: Bytes asked of the socket at a time (what has arrived is returned at once).
READ_SIZE = 65536
_HEADER = 7  # type (1), channel (2), payload size (4)


class BufferedFrameReceiver(aiormq.connection.FrameReceiver):
    """aiormq's frame receiver, reading what has arrived and cutting whole frames from it."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self.data = b""
        self.position = 0

    async def get_frame(self) -> Any:
        while True:
            frame = self._cut()
            if frame is not None:
                return frame
            partial = len(self.data) - self.position
            if not partial and self.reader.at_eof():
                raise StopAsyncIteration  # as aiormq: the stream had ended between frames
            try:
                chunk = await self.reader.read(READ_SIZE)
            except (ConnectionError, OSError) as exc:
                raise AMQPConnectionError(f"Server communication error: {exc!r}") from exc
            if not chunk:
                # As aiormq when the end comes while it waits for (more of) a frame.
                raise AMQPConnectionError(
                    f"Server connection unexpectedly closed. Read {partial} bytes of a frame")
            self.data = self.data[self.position:] + chunk
            self.position = 0

    def _cut(self) -> Any:
        """The next whole frame in the buffer, decoded; None when none is complete."""
        data, start = self.data, self.position
        if len(data) - start < _HEADER:
            return None
        if not self.started:
            if data.startswith(b"AMQP", start):
                raise ProtocolSyntaxError("Unexpected AMQP protocol header")
            self.started = True
        end = start + _HEADER + int.from_bytes(data[start + 3:start + 7], "big") + 1
        if len(data) < end:
            return None
        self.position = end
        try:
            return pamqp.frame.unmarshal(data[start:end])
        except PAMQPException as exc:
            raise InvalidFrameError(str(exc)) from exc


_installed = False


def install() -> bool:
    """Use :class:`BufferedFrameReceiver` for new connections; True when in place."""
    global _installed
    if _installed:
        return True
    version = metadata.version("aiormq")
    if version.split(".")[0] != AIORMQ_MAJOR:
        log.warning("buffered frame reader not installed: untested aiormq version",
                    aiormq=version)
        return False
    aiormq.connection.FrameReceiver = BufferedFrameReceiver  # type: ignore[misc]
    _installed = True
    return True
