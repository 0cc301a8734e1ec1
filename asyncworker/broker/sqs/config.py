"""``sqs://`` URLs, SQS transport options and queue names, read as kombu reads them.

A Celery deployment's ``broker_url`` and ``broker_transport_options`` must
mean the same here, or the worker would poll queues the producers never send
to:

- ``sqs://`` talks to AWS; ``sqs://KEY:SECRET@`` carries the credentials
  (URL-quoted), otherwise boto's usual chain (environment, profile, role)
  finds them. ``sqs://HOST[:PORT]`` is an endpoint (moto, LocalStack,
  ElasticMQ): ``http://HOST:PORT``, or ``https://`` with ``is_secure``.
- The region is the ``region`` option, else the environment's, else
  ``us-east-1``.
- A queue's SQS name is ``queue_name_prefix`` + its name, with ``.`` made
  ``-`` and other punctuation but ``-`` and ``_`` made ``_`` (a ``.fifo``
  suffix is kept). ``predefined_queues`` are keyed by that SQS name and give
  each its URL and, optionally, its own credentials and region; with them,
  no queue is ever created and any other queue is an error.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ...exceptions import ImproperlyConfigured
from .. import options as transport_options

TRANSPORT = "SQS"
DEFAULT_REGION = "us-east-1"

#: Options read, with kombu's defaults. Anything else is a configuration error.
KNOWN: dict[str, Any] = {
    "region": None,
    "visibility_timeout": 1800.0,  # seconds a received message stays hidden
    "wait_time_seconds": 10,  # long polling: seconds a receive waits (0-20)
    "polling_interval": 1.0,  # pause after an empty receive
    "queue_name_prefix": "",
    "predefined_queues": {},
    "is_secure": None,  # https to an sqs://HOST endpoint
    "sqs_base64_encoding": True,
    "sqs-creation-attributes": {},  # extra CreateQueue attributes
    "queue_tags": {},
    "client-config": {},  # botocore Config keywords
}

#: The keys a ``predefined_queues`` entry may have (kombu's, without its retry backoff).
PREDEFINED_KEYS = {"url", "access_key_id", "secret_access_key", "region"}

# '.' becomes '-'; '-' and '_' stay; any other punctuation becomes '_'.
_NAME_TABLE = {ord(c): "_" for c in string.punctuation if c not in "-_."}
_NAME_TABLE[ord(".")] = "-"


def entity_name(name: str) -> str:
    """``name`` as a legal SQS queue name, mangled as kombu mangles it."""
    if name.endswith(".fifo"):
        return name[: -len(".fifo")].translate(_NAME_TABLE) + ".fifo"
    return name.translate(_NAME_TABLE)


@dataclass(frozen=True)
class Credentials:
    """One set of AWS credentials and a region (None: boto's default chain)."""

    access_key_id: str | None
    secret_access_key: str | None
    region: str

    def __repr__(self) -> str:  # never the secret, even in a traceback
        return f"Credentials(access_key_id=***, region={self.region!r})"


@dataclass(frozen=True)
class Predefined:
    """A queue named in ``predefined_queues``."""

    url: str
    credentials: Credentials


@dataclass(frozen=True)
class SqsConfig:
    """Everything the SQS broker reads from ``broker_url`` and its options."""

    endpoint_url: str | None
    use_ssl: bool
    credentials: Credentials
    visibility_timeout: int
    wait_time_seconds: int
    polling_interval: float
    queue_name_prefix: str = ""
    base64: bool = True
    creation_attributes: dict[str, str] = field(default_factory=dict)
    queue_tags: dict[str, str] = field(default_factory=dict)
    client_config: dict[str, Any] = field(default_factory=dict)
    predefined: dict[str, Predefined] = field(default_factory=dict)
    #: ``broker_url`` for logs: host only, no credentials.
    display_url: str = "sqs://"

    def sqs_name(self, queue: str) -> str:
        """The SQS name of the (Celery) queue ``queue``."""
        return entity_name(self.queue_name_prefix + queue)


def parse(url: str, options: dict[str, Any]) -> SqsConfig:
    """The configuration ``url`` and ``broker_transport_options`` give."""
    read = transport_options.read(options, KNOWN, TRANSPORT)
    parts = urlsplit(url)
    if parts.scheme.split("+")[-1] != "sqs":
        raise ImproperlyConfigured(f"not an SQS broker URL: {parts.scheme}://")
    try:
        host, port = parts.hostname or None, parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"broker_url: bad port in the SQS URL ({exc})") from None
    is_secure = read["is_secure"]
    endpoint = None
    if host is not None:
        scheme = "https" if is_secure else "http"
        endpoint = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    region = (read["region"] or os.environ.get("AWS_REGION")
              or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    credentials = Credentials(user, password, region)
    wait = int(read["wait_time_seconds"])
    if not 0 <= wait <= 20:
        raise ImproperlyConfigured(
            f"broker_transport_options: wait_time_seconds={wait} (SQS allows 0 to 20)")
    visibility = int(float(read["visibility_timeout"]))
    if not 0 <= visibility <= 43200:
        raise ImproperlyConfigured(f"broker_transport_options: visibility_timeout="
                                   f"{visibility} (SQS allows 0 to 43200 seconds)")
    return SqsConfig(
        endpoint_url=endpoint,
        use_ssl=True if is_secure is None else bool(is_secure),
        credentials=credentials,
        visibility_timeout=visibility,
        wait_time_seconds=wait,
        polling_interval=max(0.0, float(read["polling_interval"])),
        queue_name_prefix=str(read["queue_name_prefix"] or ""),
        base64=bool(read["sqs_base64_encoding"]),
        creation_attributes={str(k): str(v)
                             for k, v in (read["sqs-creation-attributes"] or {}).items()},
        queue_tags={str(k): str(v) for k, v in (read["queue_tags"] or {}).items()},
        client_config=dict(read["client-config"] or {}),
        predefined=_predefined(read["predefined_queues"] or {}, credentials),
        display_url="sqs://" + (f"{host}" + (f":{port}" if port is not None else "")
                                if host else ""),
    )


def _predefined(queues: Any, default: Credentials) -> dict[str, Predefined]:
    if not isinstance(queues, dict):
        raise ImproperlyConfigured("broker_transport_options: predefined_queues must map "
                                   "queue names to {'url': ...}")
    out = {}
    for name, entry in queues.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ImproperlyConfigured(
                f"broker_transport_options: predefined_queues[{name!r}] needs a 'url'")
        unknown = sorted(set(entry) - PREDEFINED_KEYS)
        if unknown:
            raise ImproperlyConfigured(
                f"broker_transport_options: predefined_queues[{name!r}]: unknown key(s) "
                f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(PREDEFINED_KEYS))})")
        if entry["url"].endswith(".fifo") != str(name).endswith(".fifo"):
            # As kombu: SQS names FIFO queues *.fifo; a mismatch is a typo.
            raise ImproperlyConfigured(
                f"broker_transport_options: predefined_queues[{name!r}]: a FIFO queue's "
                "name and URL must both end with .fifo")
        out[str(name)] = Predefined(entry["url"], Credentials(
            entry.get("access_key_id", default.access_key_id),
            entry.get("secret_access_key", default.secret_access_key),
            entry.get("region") or default.region))
    return out
