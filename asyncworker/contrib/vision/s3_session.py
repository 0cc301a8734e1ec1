"""aiobotocore's HTTP layer for the S3 client, on the asyncio transport of the model client.

aiobotocore sends every request through an "HTTP session" chosen by the
documented ``AioConfig(http_session_cls=...)`` option: aiohttp's by default,
httpx's (``HttpxSession``) as the alternative. In a profile of the whole
worker, aiohttp's client request and response handling were a fifth of the
vision step's S3 cost for two small calls per task (a request object with its
own header multidict, tracing hooks, a connector and a response object that
parses every header again). :class:`StreamsSession` does the same exchange on
:class:`~.http_transport.AsyncioTransport` (a semaphore and a stack of idle
keep-alive connections per origin): the request goes out byte for byte as
botocore signed it, and the response reaches botocore the way aiobotocore's
httpx session hands it over (an ``httpx.Response`` as the raw body, which
aiobotocore reads and streams itself).

aioboto3 stays the API: the client, its calls, retries, errors and streaming
bodies are aiobotocore's. Failures become the botocore exceptions aiobotocore's
own sessions raise, so its retry handler treats them alike.

What it does not do: proxies (:func:`usable` says so; the client then keeps
aiohttp) and socket options other than asyncio's (``TCP_NODELAY`` is
asyncio's default, which is botocore's default option). As with aiobotocore's
httpx session, a streamed body (``get_object``'s ``Body``) is read whole
(``await body.read()``, as the pipeline does), not by ``read(n)`` or
``iter_chunks()``. One of at most :data:`PREREAD_MAX` bytes is read with the
head, in one read (a dropped connection in it is then retried like any other);
a longer one is left to the caller, and an error in the middle of it is
httpx's, not retried.

Responses carry :class:`LowerHeaders`: botocore's parser looks up every header
an operation may return, and its own mapping made each lookup cost a key object
and, for the absent ones, a ``KeyError``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from botocore.awsrequest import HeadersDict
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    SSLError,
)

from .http_transport import DEFAULT_PORTS, AsyncioTransport, Origin, Outgoing

#: Request bodies read from a file-like object are sent this many bytes at a time.
CHUNK = 64 * 1024
#: Seconds an idle connection is kept, when the config does not say (aiobotocore's default).
KEEPALIVE_S = 12.0
#: Seconds to wait for a free connection or for a write to go out (aiobotocore's httpx defaults).
POOL_WAIT_S = WRITE_S = 5.0
#: Streamed bodies (``get_object``'s) of at most this many bytes are read with the head:
#: one read instead of httpx's chunk iteration when botocore's caller reads them whole.
PREREAD_MAX = 1 << 20
#: Methods sent without a ``Content-Length: 0`` when they have no body.
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def usable(endpoint_url: str | None) -> bool:
    """Whether a client of ``endpoint_url`` may use this session: no proxy applies to it."""
    from botocore.utils import get_environ_proxies

    return not get_environ_proxies(endpoint_url or "https://s3.amazonaws.com")


def _ssl_context(verify: bool | str | None, client_cert: Any) -> ssl.SSLContext:
    from botocore.httpsession import get_cert_path

    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=get_cert_path(verify or True))
    if isinstance(client_cert, str):
        context.load_cert_chain(client_cert)
    elif isinstance(client_cert, tuple):
        context.load_cert_chain(*client_cert)
    return context


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    """A file-like request body, read a chunk at a time (botocore rewinds it for a retry)."""
    while chunk := body.read(CHUNK):
        yield chunk.encode() if isinstance(chunk, str) else chunk


async def _iterate(body: Any) -> AsyncIterator[bytes]:
    """An iterable request body (sync or async) as an async iterator of bytes."""
    if isinstance(body, AsyncIterable):
        async for chunk in body:
            yield chunk
    else:
        for chunk in body:
            yield chunk


def _body(body: Any) -> bytes | AsyncIterator[bytes]:
    """botocore's request body as bytes, or an async iterator of them when it is a stream."""
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        return _chunks(body)
    return _iterate(body)


def _origin(url: str) -> tuple[Origin, str, bytes]:
    """The connection's (scheme, host, port), the ``Host`` header and the request target."""
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    port = parts.port or DEFAULT_PORTS[scheme]
    # As botocore signs it: the port only when it is not the scheme's own.
    netloc = f"[{host}]" if ":" in host else host
    if port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), netloc, target.encode()


class LowerHeaders(HeadersDict):  # type: ignore[misc]  # botocore is untyped
    """botocore's case-insensitive header mapping, over names already lower-cased.

    botocore's own wraps every name in a key object on each access, and its
    response parser asks for every header an operation may return (about
    sixty for ``GetObject``), most of them absent, each miss a ``KeyError``
    raised and caught. Here a lookup is a ``str.lower`` and one dict probe.
    """

    def __init__(self, lowered: dict[str, str]) -> None:
        self._dict = lowered

    def __getitem__(self, key: str) -> str:
        value: str = self._dict[key.lower()]
        return value

    def __setitem__(self, key: str, value: str) -> None:
        self._dict[key.lower()] = value

    def __delitem__(self, key: str) -> None:
        del self._dict[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._dict

    def get(self, key: str, default: Any = None) -> Any:
        return self._dict.get(key.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def copy(self) -> LowerHeaders:
        return LowerHeaders(dict(self._dict))


class _ReadResponse(httpx.Response):
    """An ``httpx.Response`` whose body was read with its head: reading it again is free."""

    def __init__(self, status: int, content: bytes) -> None:
        super().__init__(status, stream=httpx.ByteStream(content))
        self._read = content

    async def aread(self) -> bytes:
        return self._read


class StreamsSession:
    """An aiobotocore HTTP session (``AioConfig(http_session_cls=StreamsSession)``).

    Takes the keyword arguments aiobotocore's endpoint creator passes every session.
    """

    def __init__(self, verify: bool | str | None = True, proxies: dict[str, str] | None = None,
                 timeout: float | tuple[float, float] | None = None,
                 max_pool_connections: int = 10, socket_options: Any = None,
                 client_cert: Any = None, proxies_config: Any = None,
                 connector_args: dict[str, Any] | None = None) -> None:
        if proxies or proxies_config:
            raise NotImplementedError("StreamsSession does not go through proxies")
        connect, read = timeout if isinstance(timeout, tuple | list) else (timeout, timeout)
        args = connector_args or {}
        self._timeouts = {"connect": connect, "read": read,
                          "write": args.get("write_timeout", WRITE_S),
                          "pool": args.get("pool_timeout", POOL_WAIT_S)}
        self._transport = AsyncioTransport(
            max_pool_connections, keepalive_expiry=args.get("keepalive_timeout", KEEPALIVE_S),
            ssl_context=args.get("ssl_context") or _ssl_context(verify, client_cert))

    async def __aenter__(self) -> StreamsSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the idle connections (those in use close with their responses)."""
        await self._transport.aclose()

    async def send(self, request: Any) -> Any:
        """Send botocore's prepared ``request``; an ``AioAWSResponse`` whose body is read
        unless botocore streams it (``request.stream_output``)."""
        from aiobotocore.awsrequest import HttpxAWSResponse

        url = request.url
        try:
            origin, host, target = _origin(url)
            body = _body(request.body)
            headers = [(name.encode(), value if isinstance(value, bytes) else value.encode())
                       for name, value in request.headers.items()]
            present = {name.lower() for name, _ in headers}
            if b"host" not in present:
                headers.append((b"Host", host.encode()))
            # Not "any encoding" (no header): botocore reads bodies as stored (boto/botocore#1255).
            headers.append((b"Accept-Encoding", b"identity"))
            if b"content-length" not in present and b"transfer-encoding" not in present:
                if not isinstance(body, bytes):
                    headers.append((b"Transfer-Encoding", b"chunked"))
                elif body or request.method not in _NO_BODY_METHODS:
                    headers.append((b"Content-Length", b"%d" % len(body)))
            head, stream = await self._transport.open_response(Outgoing(
                origin, request.method.encode(), target, headers, body, self._timeouts))
            length = stream.length
            if request.stream_output and (length is None or length > PREREAD_MAX):
                # Left for botocore to stream. The body only: with no headers of
                # its own, httpx hands it over undecoded.
                raw = httpx.Response(head.status, stream=stream)
                content = None
            else:
                content = await stream.read()
                raw = _ReadResponse(head.status, content)
            response = HttpxAWSResponse(url, head.status, {}, raw)
            response.headers = LowerHeaders(
                {name.decode().lower(): value.decode() for name, value in head.headers})
            if not request.stream_output:
                response._content = content  # what ``await response.content`` reads
        except httpx.ConnectTimeout as exc:
            raise ConnectTimeoutError(endpoint_url=url, error=exc) from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
            raise ReadTimeoutError(endpoint_url=url, error=exc) from exc
        except httpx.ConnectError as exc:
            if isinstance(exc.__context__, ssl.SSLError):
                raise SSLError(endpoint_url=url, error=exc) from exc
            raise EndpointConnectionError(endpoint_url=url, error=exc) from exc
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            raise ConnectionClosedError(endpoint_url=url, error=exc) from exc
        except (httpx.HTTPError, UnicodeError, ValueError) as exc:
            raise HTTPClientError(error=exc) from exc
        return response
