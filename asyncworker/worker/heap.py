"""The start-up heap, out of the garbage collector's way.

By the time a worker consumes, its process holds what start-up made to last
as long as the process: imported modules, the app and its settings, and what
the lifespan hooks opened (one S3 client brings botocore's service model, a
hundred thousand objects). CPython's oldest-generation collection walks every
one of them each time it runs: in the vision benchmark that was 60–120 ms of
CPU a time, with the event loop stopped meanwhile, and a tenth of the
worker's CPU while it ran tasks. ``gc.freeze`` moves them to a permanent
generation that collections skip. A full collection runs first, so nothing
that was already garbage is frozen; objects made later are collected as usual.

Freezing is a decision for the whole process, so only a worker that owns its
process (started from the command line) makes it, when ``worker_gc_freeze``
is on; a worker embedded in another program or a test leaves the heap alone.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect, then freeze every object tracked now; how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
