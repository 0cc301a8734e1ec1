"""Per-request costs botocore pays by default that this pipeline does not need.

A py-spy profile of the vision step (``bench/results/vision-profile.md``) put
about half of its CPU in aiobotocore, much of it in work that gives the same
answer every time:

- **Endpoint resolution.** botocore evaluates S3's endpoint rule set for every
  call and caches the result by *all* the call's endpoint parameters, ``Key``
  among them. No rule reads ``Key`` (nor ``Prefix`` or ``CopySource``), yet with
  a new key per task (``analysis/<task id>.json``) every put misses the cache
  and runs the whole rule set again. :func:`cache_endpoints` drops the
  parameters the loaded rule set never mentions before the cached lookup, so
  the cache hits; parameters it does read are kept, whatever the botocore version.
- **``Expect: 100-continue``** on every ``PutObject``. aiohttp (aiobotocore's
  HTTP layer, kept where a proxy applies: :mod:`.s3_session`) then sends the
  headers, waits a round trip for the server's ``100 Continue``, and sends the
  body in a second write. That protects large uploads from being sent to a
  server that will refuse them; for a small body it costs more than resending
  it would. :func:`skip_expect_for_small_bodies` drops the header below
  :data:`EXPECT_MIN_BYTES`.
- **Timestamps.** Every ``GetObject`` answer's ``Last-Modified`` goes through
  dateutil's general parser. :func:`fast_timestamps` reads the HTTP date format
  S3 sends in headers with the standard library first, to the same value and
  the same ``tzutc`` time zone, and leaves any other format to botocore.
- **The User-Agent header**, built twice per call from a dozen components,
  each sanitised character by character (about 35 µs a time here), though
  only the per-call feature codes (``m/...``) ever change it.
  :func:`fixed_user_agent` builds botocore's string once, for the documented
  ``Config(user_agent=...)``; the feature codes are left out.
- **Checksums and parameter validation** are switched by documented ``Config``
  options, in :func:`config_options`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

#: Bodies this large or larger keep ``Expect: 100-continue``.
EXPECT_MIN_BYTES = 1 << 20


def config_options() -> dict[str, Any]:
    """botocore ``Config`` options that skip work the pipeline does not need.

    - ``parameter_validation=False``: the pipeline's calls pass a ``str`` bucket
      and key and a ``bytes`` body, always; S3 still rejects a bad request.
    - ``request_checksum_calculation="when_required"`` and
      ``response_checksum_validation="when_required"``: CRC32 of every body on
      put and get only where the operation demands one (botocore's behaviour
      before 1.36). TCP and TLS already check the bytes in transit; S3 still
      checks ``Content-MD5`` where an operation requires it.
    """
    return {"parameter_validation": False,
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required"}


def fixed_user_agent(botocore_session: Any, config: Any) -> str:
    """The User-Agent botocore builds for a client of ``botocore_session`` with ``config``,
    without the per-call feature codes; for ``Config(user_agent=...)``.

    The session's ``user_agent_extra`` is left out: botocore appends it to a
    configured user agent itself.
    """
    from botocore.useragent import UserAgentString

    creator = UserAgentString.from_environment().set_session_config(
        session_user_agent_name=botocore_session.user_agent_name,
        session_user_agent_version=botocore_session.user_agent_version,
        session_user_agent_extra=None)
    # Feature codes come from the call's context; outside a call there are none.
    return str(creator.with_client_config(config).to_string())


def _parameters_read(rule_set: dict[str, Any]) -> frozenset[str]:
    """The rule set's parameters that any rule mentions (by reference or in a template)."""
    text = json.dumps(rule_set.get("rules", []))
    return frozenset(name for name in rule_set.get("parameters", {})
                     if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text))


def cache_endpoints(client: Any) -> bool:
    """Make ``client``'s endpoint cache ignore parameters no rule reads; whether it could.

    Leaves the client as it was (and says why at DEBUG) where this botocore is
    laid out differently than expected: correct, only slower.
    """
    try:
        provider = client._ruleset_resolver._provider
        model = client.meta.service_model
        rule_set = client._loader.load_service_model(
            model.service_name, "endpoint-rule-set-1", model.api_version)
        resolve = provider.resolve_endpoint
    except Exception as exc:  # an optimisation: never a failure
        log.debug("S3 endpoint cache left as it is: %r", exc)
        return False
    read = _parameters_read(rule_set)
    unread = frozenset(rule_set.get("parameters", {})) - read
    if not unread:
        return False

    def resolve_endpoint(**params: Any) -> Any:
        return resolve(**{k: v for k, v in params.items() if k not in unread})

    provider.resolve_endpoint = resolve_endpoint
    return True


def _drop_small_expect(params: dict[str, Any], **_: Any) -> None:
    body = params.get("body")
    headers = params.get("headers", {})
    if "Expect" not in headers or body is None:
        return
    try:
        size = len(body) if isinstance(body, bytes | bytearray) else _remaining(body)
    except (OSError, TypeError, ValueError):
        return
    if size < EXPECT_MIN_BYTES:
        del headers["Expect"]


def _remaining(body: Any) -> int:
    """Bytes left in a seekable file-like body (``ValueError`` if it is not seekable)."""
    position = body.tell()
    end = body.seek(0, 2)
    body.seek(position)
    return int(end - position)


def skip_expect_for_small_bodies(client: Any) -> None:
    """No ``Expect: 100-continue`` on bodies of less than :data:`EXPECT_MIN_BYTES`.

    Registered last on the event botocore's own handler adds the header on
    (``before-call.s3``), so it runs after it.
    """
    client.meta.events.register_last("before-call.s3", _drop_small_expect)


def parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, with a fast path for HTTP dates (``Mon, 30 Nov 2026 ...``)."""
    from botocore.utils import parse_timestamp as general
    from dateutil.tz import tzutc  # type: ignore[import-untyped]

    if isinstance(value, str) and value.endswith(" GMT"):
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
        else:
            if parsed.utcoffset() == timedelta(0):
                return parsed.replace(tzinfo=tzutc())
    result: datetime = general(value)
    return result


def fast_timestamps(botocore_session: Any) -> None:
    """Have every client of ``botocore_session`` parse timestamps with :func:`parse_timestamp`.

    ``set_parser_defaults`` is botocore's documented way to choose the parser.
    """
    factory = botocore_session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=parse_timestamp)


def tune(client: Any) -> None:
    """Both per-client changes above, on a freshly opened S3 client."""
    cache_endpoints(client)
    skip_expect_for_small_bodies(client)
