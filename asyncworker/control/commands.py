"""The remote-control commands every worker answers, registered by name.

A command is ``async def name(worker, **arguments)``; its return value is the
reply (``{"ok": ...}``, ``{"error": ...}`` or any JSON value, as Celery's;
``pidbox.NO_REPLY`` for none). They are grouped by concern:

* ``inspect.py``: read-only (``stats``, ``active``, ``conf``, ...);
* ``tasks.py``: revocation (``revoke``, ``terminate``, by stamp);
* ``limits.py``: ``rate_limit``, ``time_limit``;
* ``consumers.py``: ``add_consumer``, ``cancel_consumer``;
* ``lifecycle.py``: ``shutdown`` and the pool commands.

More commands come from plugins or ``app.control_command(name)`` (the events
plugin adds ``enable_events`` / ``disable_events``); the mailbox looks them
up in ``app.control_commands``.
"""

from __future__ import annotations

from ..plugins import ControlCommand
from . import consumers, inspect, lifecycle, limits, tasks

#: Celery's older names for some inspect commands.
ALIASES = {
    "dump_active": "active", "dump_reserved": "reserved", "dump_schedule": "scheduled",
    "dump_revoked": "revoked", "dump_tasks": "registered", "dump_conf": "conf",
}

BUILTIN: dict[str, ControlCommand] = {
    **inspect.COMMANDS,
    **tasks.COMMANDS,
    **limits.COMMANDS,
    **consumers.COMMANDS,
    **lifecycle.COMMANDS,
}
BUILTIN.update({alias: BUILTIN[name] for alias, name in ALIASES.items()})
