"""The worker: consumer (receive, gate, dispatch), executor (run, store, ack), lifecycle."""

from .worker import Worker

__all__ = ["Worker"]
