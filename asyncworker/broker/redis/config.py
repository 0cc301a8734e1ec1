"""The Redis transport's settings: ``broker_url`` and ``broker_transport_options``.

Option names and meanings are kombu's, so a Celery configuration carries
over; names kombu has and this transport does not (and typos) are errors at
start (``options.read``). Two differ on purpose: ``unacked_restore_interval``
defaults to 2 s instead of kombu's 10 x 10 s, so messages of a dead worker
come back within a few seconds of their ``visibility_timeout``, and
``polling_interval`` is the longest a blocking pop waits before the consumer
looks at its state again (kombu's ``brpop_timeout``, 1 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ...exceptions import ImproperlyConfigured
from .. import options as transport_options
from .keys import PRIORITY_STEPS, SEP, Keys, QueueCycle

KNOWN: dict[str, Any] = {
    "visibility_timeout": 3600.0,
    "polling_interval": 1.0,
    "priority_steps": list(PRIORITY_STEPS),
    "sep": SEP,
    "queue_order_strategy": "round_robin",
    "fanout_prefix": None,  # True (default): "/{db}."; a string: that prefix; False: none
    "fanout_patterns": True,
    "global_keyprefix": "",
    "unacked_mutex_expire": 300.0,
    "unacked_restore_interval": 2.0,
    "unacked_restore_limit": 100,
    # kombu's pause between its sweeps; accepted so a Celery configuration carries
    # over, with no effect: the sweep runs every unacked_restore_interval.
    "unacked_restore_throttle": None,
    "socket_timeout": None,
    "socket_connect_timeout": None,
    "socket_keepalive": None,
    "health_check_interval": 25,
    "max_connections": 32,
    "client_name": None,
    # sentinel:// only (kombu's names): the monitored master, and how to reach
    # the sentinels themselves.
    "master_name": None,
    "min_other_sentinels": 0,
    "sentinel_kwargs": None,
}


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """What the transport reads from the URL and the options."""

    url: str
    db: int
    keys: Keys
    visibility_timeout: float
    polling_interval: float
    queue_order_strategy: str
    mutex_expire: float
    restore_interval: float
    restore_limit: int
    max_connections: int
    client: dict[str, Any]
    #: sentinel://: the sentinels' (host, port), and the master they monitor.
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    min_other_sentinels: int = 0
    sentinel_kwargs: dict[str, Any] | None = None

    @property
    def refresh_interval(self) -> float:
        """How often the unacked messages held here are marked alive: a quarter of
        the visibility timeout, so a few missed refreshes still keep them."""
        return max(0.2, min(self.visibility_timeout / 4, 60.0))


def parse(url: str | list[str], options: dict[str, Any],
          connect_timeout: float) -> RedisOptions:
    """``url`` (``redis://``, ``rediss://``, or the ``sentinel://`` URLs of the
    sentinels, ``;``-joined or a list) and the transport options, checked."""
    merged = transport_options.read(options, KNOWN, "redis")
    every = [url] if isinstance(url, str) else list(url)
    parts = urlsplit(every[0])
    scheme = parts.scheme.split("+")[-1]
    if scheme not in ("redis", "rediss", "sentinel"):
        raise ImproperlyConfigured(f"the redis transport takes redis://, rediss:// or "
                                   f"sentinel://, not {scheme}://")
    if len(every) > 1 and scheme != "sentinel":
        raise ImproperlyConfigured("broker_url: a failover list is not supported for Redis "
                                   "(use one URL, or sentinel:// URLs)")
    sentinels: list[tuple[str, int]] = []
    if scheme == "sentinel":
        if not merged["master_name"]:
            raise ImproperlyConfigured("broker_transport_options: sentinel:// needs "
                                       "master_name (the master the sentinels monitor)")
        for each in every:
            node = urlsplit(each)
            sentinels.append((node.hostname or "localhost", node.port or 26379))
    db = _db(parts.path)
    steps = merged["priority_steps"]
    if (not isinstance(steps, (list, tuple)) or not steps
            or not all(isinstance(s, int) and 0 <= s <= 9 for s in steps)):
        raise ImproperlyConfigured("broker_transport_options: priority_steps must be a list "
                                   "of integers 0-9")
    steps = sorted(set(steps))
    if steps[0] != 0:
        steps.insert(0, 0)  # kombu files anything below the first step under it
    if merged["queue_order_strategy"] not in QueueCycle.STRATEGIES:
        raise ImproperlyConfigured("broker_transport_options: queue_order_strategy must be "
                                   f"one of {', '.join(QueueCycle.STRATEGIES)}")
    fanout = merged["fanout_prefix"]
    if fanout is None:
        fanout = True
    if not isinstance(fanout, (bool, str)):
        raise ImproperlyConfigured("broker_transport_options: fanout_prefix must be a bool "
                                   "or a string")
    for name in ("visibility_timeout", "polling_interval", "unacked_restore_interval"):
        if merged[name] <= 0:
            raise ImproperlyConfigured(f"broker_transport_options: {name} must be positive")
    socket_timeout = merged["socket_timeout"]
    if socket_timeout is not None and float(socket_timeout) <= merged["polling_interval"]:
        raise ImproperlyConfigured(
            "broker_transport_options: socket_timeout must exceed polling_interval (the "
            "blocking pop waits that long for a reply)")
    client = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": merged["socket_connect_timeout"] or connect_timeout,
        "socket_keepalive": merged["socket_keepalive"],
        "health_check_interval": merged["health_check_interval"],
        "client_name": merged["client_name"],
    }
    if scheme == "sentinel":
        client["db"] = db
        if parts.username:
            client["username"] = unquote(parts.username)
        if parts.password:
            client["password"] = unquote(parts.password)
    return RedisOptions(
        url=";".join(every), db=db,
        keys=Keys.build(db, prefix=str(merged["global_keyprefix"] or ""),
                        sep=str(merged["sep"]), steps=steps, fanout_prefix=fanout,
                        fanout_patterns=bool(merged["fanout_patterns"])),
        visibility_timeout=float(merged["visibility_timeout"]),
        polling_interval=float(merged["polling_interval"]),
        queue_order_strategy=merged["queue_order_strategy"],
        mutex_expire=float(merged["unacked_mutex_expire"]),
        restore_interval=float(merged["unacked_restore_interval"]),
        restore_limit=int(merged["unacked_restore_limit"]),
        max_connections=max(4, int(merged["max_connections"])),
        client={k: v for k, v in client.items() if v is not None},
        sentinels=tuple(sentinels), master_name=merged["master_name"],
        min_other_sentinels=int(merged["min_other_sentinels"]),
        sentinel_kwargs=merged["sentinel_kwargs"],
    )


def _db(path: str) -> int:
    # kombu's virtual host: "/5" is database 5; "", "/" database 0.
    name = path.strip("/")
    if not name:
        return 0
    try:
        return int(name)
    except ValueError:
        raise ImproperlyConfigured(f"redis broker_url: database must be a number, not "
                                   f"{name!r}") from None
