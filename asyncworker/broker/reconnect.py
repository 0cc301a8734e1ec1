"""Broker reconnection: aio-pika's robust connection, paced and logged our way.

aio-pika reconnects a robust connection at a fixed interval, and it and
aiormq log each failed attempt (an ERROR from aiormq, a WARNING from
aio-pika) and each drop (an ERROR, a WARNING with a traceback, an ERROR per
channel). ``BackoffConnection`` takes the interval from an ``Outage``
instead (exponential backoff with jitter) and reports each attempt to it, so
a broker outage logs one WARNING per attempt and, past a threshold, one
ERROR; ``quiet_library_logs`` drops the libraries' own lines for the same
events. Anything else those libraries log (a malformed frame, a blocked
connection) still shows.

With a failover list, the connection also moves through the cluster's nodes
(``urls.Failover``): to the next node as soon as the link drops and after
each failed attempt, pausing with backoff only once every node has failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiormq
from aio_pika import RobustConnection
from yarl import URL

from ..backoff import Outage
from ..logging import redact_url
from .raw import RawChannel
from .urls import Failover


class BackoffConnection(RobustConnection):
    """A robust connection whose reconnect attempts an ``Outage`` paces and logs."""

    #: Queues that hand consumers aiormq's messages (``raw.py``).
    CHANNEL_CLASS = RawChannel

    #: Set once the first connection is up (the first connect is retried by the
    #: broker itself, a new connection per attempt).
    outage: Outage | None = None
    #: The nodes to move through, and how one's URL is made into aio-pika's.
    failover: Failover | None = None
    amqp_url: Callable[[str], str] = str

    def _move_on(self, failed: bool) -> bool:
        """Point the next attempt at the next node; True when a round of failed
        attempts is over (time to back off)."""
        failover = self.failover
        if failover is None:
            return True
        round_over = False
        if failed:
            round_over = failover.failed()
        else:
            failover.advance()
        self.url = URL(self.amqp_url(failover.current))
        return round_over

    def _target(self) -> str:
        """The node being tried, as ``broker_url`` writes it, without the password."""
        return redact_url(self.failover.current if self.failover else str(self.url))

    @property  # type: ignore[override]
    def reconnect_interval(self) -> float:
        """Seconds to wait after the last failed attempt (read by aio-pika's loop)."""
        return self._delay

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._delay = float(value)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        outage = self.outage
        if outage is not None and not self._close_called and not outage.down:
            error = closing.exception() if closing.done() and not closing.cancelled() else None
            outage.lost(error)
            # The node may be gone: the first attempt goes to the next one.
            self._move_on(failed=False)
        await super()._on_connection_close(closing)

    async def _RobustConnection__connect_transport(self) -> None:
        # aio-pika's private step: one attempt of its reconnect loop.
        attempt = super()._RobustConnection__connect_transport  # type: ignore[misc]
        outage = self.outage
        try:
            await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if outage is not None:
                outage.target = self._target()
                self._delay = outage.failed(exc, pause=self._move_on(failed=True))
            raise
        if self.failover is not None:
            self.failover.succeeded()
        if outage is not None:
            outage.target = self._target()
            outage.recovered()
            self._delay = outage.policy.initial


class _LibraryNoise(logging.Filter):
    """Drop aio-pika's and aiormq's lines about attempts and drops ``Outage`` reports."""

    MESSAGES = (
        "error when creating transport",  # aiormq: each failed attempt
        "Connection attempt to",  # aio-pika: each failed attempt
        "Reconnect attempt failed",  # aio-pika: same, other errors
        "Connection to %s closed. Reconnecting",  # aio-pika: the drop
        "Unexpected connection close from remote",  # aiormq: the drop (broker closing)
    )

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith(self.MESSAGES):
            return False
        if msg.startswith("Callback %r error") and "_on_close" in repr(record.args):
            return False  # each channel of a dropped connection, once
        if msg.startswith("Cancelling cause reader exited abnormally"):
            # The link dropped (reported by Outage); keep anything else, such
            # as a frame the client could not decode.
            exc = record.exc_info[1] if record.exc_info else None
            return not isinstance(exc, (aiormq.exceptions.ConnectionClosed, OSError))
        return True


_FILTER = _LibraryNoise()


def quiet_library_logs() -> None:
    """Install the filter on the libraries' loggers (idempotent)."""
    for name in ("aiormq.connection", "aio_pika.robust_connection", "aio_pika.tools"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
