"""Admission middleware: from a received job to a held concurrency slot.

One concern a file, in the order the worker chains them: ``revoked``,
``expires``, ``dedupe``, ``eta``, ``ratelimit``, ``caps``, ``slot``, then
``stale`` and the revoked / expiry checks once more just before the start.
A gate that refuses a job finishes it through ``Executor.finish`` and does
not call on.
"""
