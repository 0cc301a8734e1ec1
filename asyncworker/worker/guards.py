"""Guards of the event loop against values a task message can smuggle in.

A NaN deadline in the timer heap of Python's asyncio loop breaks the heap's
ordering (every comparison with NaN is false): timers behind it stop firing
and every task on the worker stalls. Message fields are checked when decoded
(:func:`asyncworker.message.finite`), but a task body can still compute a
delay from its arguments and call ``asyncio.sleep(nan)``. :func:`guard_timers`
makes the loop refuse a NaN deadline with ``ValueError`` in the caller (that
task fails; the loop is untouched). Infinite deadlines stay allowed
(``asyncio.sleep(math.inf)`` waits forever, which is ordered and harmless).

It wraps the one method every asyncio timer goes through (``call_later``
calls ``call_at``), on the worker's loop instance only; uvloop's loop
cannot be patched and converts the deadline itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def guard_timers(loop: asyncio.AbstractEventLoop) -> bool:
    """Make ``loop`` refuse NaN timer deadlines; True when the guard is in place."""
    original: Callable[..., asyncio.TimerHandle] = loop.call_at
    if getattr(original, "_nan_guard", False):
        return True

    def call_at(when: float, callback: Callable[..., Any], *args: Any,
                context: Any = None) -> asyncio.TimerHandle:
        if when != when:  # NaN: the only value not equal to itself
            raise ValueError("timer deadline is NaN (a NaN delay or timeout)")
        return original(when, callback, *args, context=context)

    call_at._nan_guard = True  # type: ignore[attr-defined]
    try:
        loop.call_at = call_at  # type: ignore[method-assign,assignment]
    except AttributeError:  # a loop type without instance attributes (uvloop)
        return False
    return True
