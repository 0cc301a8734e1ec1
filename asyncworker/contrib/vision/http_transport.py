"""An HTTP/1.1 transport for ``httpx.AsyncClient`` on plain asyncio streams.

httpx stays the API: requests, responses, timeouts and exceptions are httpx's.
What this replaces is the layer under it. httpx's default transport goes
through httpcore's connection pool, h11's state machine and anyio's streams,
and a profile of the vision step put a fifth of its CPU there: a cancel scope
around every socket read and write, the pool scanning its connections on every
request, h11's event objects. This transport does the same HTTP/1.1 exchange
with one buffered write per small request, asyncio's own stream reader, and a
pool that is a semaphore plus a stack of idle connections per origin, so its
cost does not grow with the number of connections.

What it does: ``Content-Length``, chunked and read-to-close response bodies,
chunked request bodies, keep-alive reuse (idle connections kept for
``keepalive_expiry`` seconds, dropped when the server closed them), interim
``1xx`` responses skipped, TLS. httpx's four timeouts apply: ``pool`` to wait
for a free connection, ``connect``, ``write`` and ``read`` (to each read, so a
slow but steady body does not time out). Failures raise the httpx exceptions
httpx's own transport raises (``ConnectError``, ``ReadTimeout``,
``RemoteProtocolError`` ...). What it does not do: HTTP/2, proxies, Unix
sockets.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import NamedTuple, TypeVar

import httpx

T = TypeVar("T")

#: Longest response head (status line and headers) accepted.
MAX_HEAD_BYTES = 64 * 1024
#: Largest read of a body at once.
READ_SIZE = 64 * 1024
#: Request bodies are sent in one write with the head up to this size.
WRITE_BATCH = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUS = frozenset({204, 304})

Origin = tuple[str, str, int]


class Head(NamedTuple):
    """A response's status line and headers."""

    status: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]


class Outgoing(NamedTuple):
    """A request as it goes on the wire: what :meth:`AsyncioTransport.open_response` sends.

    ``request`` is the ``httpx.Request`` it came from, if any (httpx's exceptions name it).
    """

    origin: Origin
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes | AsyncIterable[bytes]
    timeouts: dict[str, float | None]
    request: httpx.Request | None = None


class _Connection:
    """One TCP (or TLS) connection; ``idle_since`` while it waits in the pool."""

    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        """Open at both ends and not idle too long (servers close idle connections)."""
        return (now - self.idle_since < expiry and not self.reader.at_eof()
                and not self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


async def _timed(aw: Awaitable[T], timeout: float | None, request: httpx.Request | None,
                 on_timeout: type[httpx.TimeoutException], what: str) -> T:
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError:
        raise on_timeout(f"{what} timed out", request=request) from None


async def _read(aw: Awaitable[T], timeout: float | None, request: httpx.Request | None,
                eof: str = "server disconnected in the middle of a response") -> T:
    """One read from the server, its failures as httpx's exceptions (``eof`` if it closed)."""
    try:
        return await _timed(aw, timeout, request, httpx.ReadTimeout, "read")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            eof = "server disconnected in the middle of a response"
        raise httpx.RemoteProtocolError(eof, request=request) from None
    except asyncio.LimitOverrunError:
        raise httpx.RemoteProtocolError("response line or head too long",
                                        request=request) from None
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None


def _parse_head(head: bytes, request: httpx.Request | None) -> tuple[int, bytes, bytes,
                                                              list[tuple[bytes, bytes]]]:
    """Status, reason, HTTP version and headers of a response head (without its blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3
            or not parts[1].isdigit()):
        raise httpx.RemoteProtocolError(f"bad status line {lines[0][:100]!r}", request=request)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in b" \t":
            raise httpx.RemoteProtocolError(f"bad header line {line[:100]!r}", request=request)
        headers.append((name, value.strip(b" \t")))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", parts[0], headers


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The comma-separated values of every ``name`` header, lower-cased."""
    return _split([value for key, value in headers if key.lower() == name])


def _split(values: list[bytes]) -> list[bytes]:
    """Comma-separated header values as lower-cased tokens."""
    return [token.strip().lower() for value in values
            for token in value.split(b",") if token.strip()]


#: The response headers that delimit its body or end its connection.
_FRAMING = frozenset({b"transfer-encoding", b"content-length", b"connection"})


def _framing(headers: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """The values of the :data:`_FRAMING` headers, by lower-cased name (one pass over all)."""
    found: dict[bytes, list[bytes]] = {}
    for key, value in headers:
        name = key.lower()
        if name in _FRAMING:
            found.setdefault(name, []).append(value)
    return found


class _Body:
    """How the response's body is delimited."""

    CHUNKED = -1
    TO_CLOSE = -2


def _body_length(status: int, method: bytes, framing: dict[bytes, list[bytes]],
                 request: httpx.Request | None) -> int:
    """Bytes of body, or :attr:`_Body.CHUNKED` / :attr:`_Body.TO_CLOSE` (RFC 9112 §6.3).

    ``framing`` is what :func:`_framing` found in the response's headers.
    """
    if method == b"HEAD" or status in _NO_BODY_STATUS or status < 200:
        return 0
    encodings = _split(framing.get(b"transfer-encoding", []))
    if encodings:
        if encodings[-1] != b"chunked":
            return _Body.TO_CLOSE
        return _Body.CHUNKED
    lengths = {value.strip() for value in framing.get(b"content-length", [])}
    if not lengths:
        return _Body.TO_CLOSE
    if len(lengths) > 1 or not all(x.isdigit() for x in lengths):
        raise httpx.RemoteProtocolError(f"bad Content-Length {sorted(lengths)!r}", request=request)
    return int(lengths.pop())


class AsyncioTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams, at most ``max_connections`` requests at once.

    ``ssl_context`` is used for ``https`` URLs (default: httpx's, verifying
    against certifi's roots).
    """

    def __init__(self, max_connections: int = 100, keepalive_expiry: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections = max(1, max_connections)
        self._slots = asyncio.Semaphore(self.max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response's body is read as the caller reads it."""
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}",
                                            request=request)
        # httpcore's "target" extension: the request target exactly as given.
        target = request.extensions.get("target") or url.raw_path
        head, stream = await self.open_response(Outgoing(
            (url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme]),
            request.method.encode(), target, request.headers.raw,
            request.stream,  # type: ignore[arg-type]  # an async client's: async
            request.extensions.get("timeout", {}), request))
        return httpx.Response(head.status, headers=head.headers, stream=stream,
                              extensions={"http_version": head.version,
                                          "reason_phrase": head.reason})

    async def open_response(self, out: Outgoing) -> tuple[Head, ResponseStream]:
        """Send ``out``; its response's head, and its body as a stream to read and close.

        For callers with no use for an ``httpx.Request`` and ``httpx.Response``
        (the S3 session under aiobotocore builds botocore's own from these).
        """
        if self._closed:
            raise RuntimeError("the transport is closed")
        request, timeouts = out.request, out.timeouts
        if self._slots.locked():
            await _timed(self._slots.acquire(), timeouts.get("pool"), request,
                         httpx.PoolTimeout, "waiting for a connection")
        else:
            await self._slots.acquire()
        try:
            origin = out.origin
            connection = self._take_idle(origin) or await self._connect(
                origin, timeouts.get("connect"), request)
            try:
                await self._send(connection, out, timeouts.get("write"))
                status, reason, version, headers = await self._read_head(
                    connection, request, timeouts.get("read"))
                framing = _framing(headers)
                length = _body_length(status, out.method, framing, request)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._slots.release()
            raise
        keep = (version == b"HTTP/1.1" and length != _Body.TO_CLOSE
                and b"close" not in _split(framing.get(b"connection", []))
                and b"close" not in _tokens(out.headers, b"connection"))
        stream = ResponseStream(self, origin, connection, length, keep, request,
                                 timeouts.get("read"))
        return Head(status, reason, version, headers), stream

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self._expiry):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, timeout: float | None,
                       request: httpx.Request | None) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            context = self._ssl
        try:
            reader, writer = await _timed(
                asyncio.open_connection(host, port, ssl=context, limit=MAX_HEAD_BYTES),
                timeout, request, httpx.ConnectTimeout, f"connecting to {host}:{port}")
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Connection(reader, writer)

    async def _send(self, connection: _Connection, out: Outgoing,
                    timeout: float | None) -> None:
        lines = [b"%s %s HTTP/1.1\r\n" % (out.method, out.target)]
        lines.extend(b"%s: %s\r\n" % (name, value) for name, value in out.headers)
        lines.append(b"\r\n")
        writer, request = connection.writer, out.request
        try:
            if isinstance(out.body, bytes):
                # One write, and no drain to wait for unless the kernel took less.
                writer.write(b"".join(lines) + out.body)
            else:
                await self._send_stream(writer, out, b"".join(lines), timeout)
            if writer.transport.get_write_buffer_size():
                await _timed(writer.drain(), timeout, request, httpx.WriteTimeout, "write")
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None

    @staticmethod
    async def _send_stream(writer: asyncio.StreamWriter, out: Outgoing, head: bytes,
                           timeout: float | None) -> None:
        """A streamed body, in writes of :data:`WRITE_BATCH` (chunked if the headers say)."""
        chunked = b"chunked" in _tokens(out.headers, b"transfer-encoding")
        pending, size = [head], 0
        async for chunk in out.body:  # type: ignore[union-attr]
            if not chunk:
                continue
            pending.append(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            size += len(chunk)
            if size >= WRITE_BATCH:
                writer.write(b"".join(pending))
                pending, size = [], 0
                await _timed(writer.drain(), timeout, out.request, httpx.WriteTimeout, "write")
        if chunked:
            pending.append(b"0\r\n\r\n")
        writer.write(b"".join(pending))

    async def _read_head(self, connection: _Connection, request: httpx.Request | None,
                         timeout: float | None) -> tuple[int, bytes, bytes,
                                                         list[tuple[bytes, bytes]]]:
        reader = connection.reader
        while True:
            head = await _read(reader.readuntil(b"\r\n\r\n"), timeout, request,
                               "server disconnected without sending a response")
            status, reason, version, headers = _parse_head(head[:-4], request)
            if not (100 <= status < 200) or status == 101:
                return status, reason, version, headers

    def _release(self, origin: Origin, connection: _Connection, reusable: bool) -> None:
        """A response is closed: its connection back to the pool (or closed), its slot freed."""
        if reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()
        self._slots.release()

    async def aclose(self) -> None:
        """Close the idle connections; those in use close with their responses."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class ResponseStream(httpx.AsyncByteStream):
    """A response's body, read from its connection as the caller iterates."""

    def __init__(self, transport: AsyncioTransport, origin: Origin, connection: _Connection,
                 length: int, keep: bool, request: httpx.Request | None,
                 timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._length = length
        self._keep = keep
        self._request = request
        self._timeout = timeout
        self._complete = length == 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None or self._complete:
            return
        reader, request, timeout = connection.reader, self._request, self._timeout
        if self._length == _Body.CHUNKED:
            while True:
                line = await _read(reader.readuntil(b"\r\n"), timeout, request)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"bad chunk size line {line[:50]!r}",
                                                    request=request) from None
                if size == 0:
                    # Trailers, if any, up to the blank line.
                    while await _read(reader.readuntil(b"\r\n"), timeout, request) != b"\r\n":
                        pass
                    break
                data = await _read(reader.readexactly(size + 2), timeout, request)
                if data[-2:] != b"\r\n":
                    raise httpx.RemoteProtocolError("chunk not followed by CRLF",
                                                    request=request)
                yield data[:-2]
        elif self._length == _Body.TO_CLOSE:
            while data := await _read(reader.read(READ_SIZE), timeout, request):
                yield data
        else:
            left = self._length
            while left:
                data = await _read(reader.read(min(left, READ_SIZE)), timeout, request)
                if not data:
                    raise httpx.RemoteProtocolError(
                        f"server closed the connection with {left} bytes of body unsent",
                        request=request)
                left -= len(data)
                yield data
        self._complete = True

    @property
    def length(self) -> int | None:
        """The body's size from ``Content-Length`` (``None`` when chunked or read to close)."""
        return self._length if self._length >= 0 else None

    async def read(self) -> bytes:
        """The whole body at once, then the connection back to the pool.

        A body of known length is one read: no chunk iteration.
        """
        try:
            connection = self._connection
            if connection is not None and not self._complete and self._length > 0:
                data = await _read(connection.reader.readexactly(self._length),
                                   self._timeout, self._request)
                self._complete = True
                return data
            return b"".join([chunk async for chunk in self])
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._transport._release(self._origin, connection, self._keep and self._complete)
