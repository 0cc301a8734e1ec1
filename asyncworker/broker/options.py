"""``broker_transport_options``: each transport names the options it reads.

Celery passes the dict to kombu, which ignores names it does not know, so a
typo (``visibilty_timeout``) silently keeps the default. Here every transport
declares its options with their defaults and types, and anything else is a
configuration error at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import ImproperlyConfigured


def read(options: Mapping[str, Any], known: Mapping[str, Any], transport: str) -> dict[str, Any]:
    """``known`` (name → default) overlaid with ``options``; unknown names are errors.

    A value is coerced to its default's type where that is unambiguous (an
    int or float from a string, as environment variables give them); a default
    of None accepts anything.
    """
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ImproperlyConfigured(
            f"broker_transport_options: unknown option(s) {', '.join(map(repr, unknown))} "
            f"for the {transport} transport (known: {', '.join(sorted(known))})")
    merged = dict(known)
    for name, value in options.items():
        merged[name] = _coerce(name, value, known[name], transport)
    return merged


def _coerce(name: str, value: Any, default: Any, transport: str) -> Any:
    if default is None or value is None or isinstance(default, (dict, list, str)):
        return value
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
                return value.lower() in {"true", "1", "yes"}
            raise ValueError(value)
        if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, str):
            return int(value)
    except ValueError:
        pass
    raise ImproperlyConfigured(
        f"broker_transport_options: {name}={value!r} is not a valid {kind.__name__} "
        f"for the {transport} transport")
