"""The asyncio HTTP/1.1 transport under httpx, against a scripted local TCP server.

Each test's server reads one request head (and its body, by Content-Length or
chunked) per reply it was given and writes that reply's exact bytes, so body
framings, keep-alive and failures are the ones under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from asyncworker.contrib.vision.http_transport import AsyncioTransport

Reply = bytes | None  # None: close the connection without answering


@dataclass
class Server:
    """Serves ``replies`` in order across connections; records what it received."""

    replies: list[Reply]
    delay: float = 0.0
    close_after_each: bool = False
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                lowered = head.lower()
                if b"transfer-encoding: chunked" in lowered:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        data = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += data[:-2]
                elif b"content-length:" in lowered:
                    length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                self.requests.append(head + body)
                reply = self.replies.pop(0)
                await asyncio.sleep(self.delay)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_each or b"connection: close" in reply.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(*replies: Reply, delay: float = 0.0, close_after_each: bool = False,
                  tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(list(replies), delay, close_after_each)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls else "http"
    server.url = f"{scheme}://localhost:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()


def client(**options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncioTransport(4), **options)  # type: ignore[arg-type]


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


async def test_content_length_body_and_keep_alive_reuse() -> None:
    async with serving(OK, OK, OK) as server, client() as http:
        for _ in range(3):
            response = await http.post(server.url + "/x?q=1", json={"a": 1})
            assert (response.status_code, response.text) == (200, "hello")
            assert response.http_version == "HTTP/1.1"
            assert response.reason_phrase == "OK"
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /x?q=1 HTTP/1.1\r\n")
    assert b'\r\n\r\n{"a":1}' in first or b'\r\n\r\n{"a": 1}' in first
    assert b"host: localhost:" in first.lower()


async def test_chunked_body_with_extension_and_trailer() -> None:
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: t\r\n\r\n")
    async with serving(reply, OK) as server, client() as http:
        assert (await http.get(server.url)).content == b"abcdefg"
        assert (await http.get(server.url)).content == b"hello"  # same connection after it
    assert server.connections == 1


async def test_chunked_request_body_is_framed() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    async with serving(OK) as server, client() as http:
        assert (await http.post(server.url, content=parts())).status_code == 200
    assert server.requests[0].lower().count(b"transfer-encoding: chunked") == 1
    assert server.requests[0].endswith(b"one,two")


async def test_body_to_close_and_connection_close_open_a_new_connection() -> None:
    to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    async with serving(to_close) as first, client() as http:
        assert (await http.get(first.url)).text == "until the end"
        async with serving(OK, OK) as second:
            assert (await http.get(second.url)).text == "hello"
            assert (await http.get(second.url)).text == "hello"
    assert (first.connections, second.connections) == (1, 1)


async def test_no_body_for_head_204_and_interim_100() -> None:
    replies = (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
               b"HTTP/1.1 204 No Content\r\n\r\n",
               b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    async with serving(*replies) as server, client() as http:
        head = await http.head(server.url)
        assert (head.status_code, head.content) == (200, b"")
        assert (await http.get(server.url)).status_code == 204
        assert (await http.get(server.url)).text == "hello"
    assert server.connections == 1


async def test_streamed_response_closed_early_drops_its_connection() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200_000
    async with serving(big, OK) as server, client() as http:
        async with http.stream("GET", server.url) as response:
            async for chunk in response.aiter_raw():
                assert chunk
                break
        assert (await http.get(server.url)).text == "hello"
    assert server.connections == 2


async def test_server_closing_idle_connection_is_not_reused() -> None:
    closes_after = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    async with serving(closes_after, None, OK) as server, client() as http:
        assert (await http.get(server.url)).text == "hello"
        # The server answers the second request on that connection by closing it.
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get(server.url)
        assert (await http.get(server.url)).text == "hello"


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"NOT HTTP\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n bad fold\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
async def test_malformed_or_cut_responses_raise_remote_protocol_error(reply: bytes) -> None:
    async with serving(reply, close_after_each=True) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)


async def test_timeouts_raise_httpx_timeouts_and_free_the_slot() -> None:
    async with serving(OK, OK, delay=0.5) as server:
        transport = AsyncioTransport(1)
        async with httpx.AsyncClient(transport=transport, timeout=0.05) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url)
            assert not transport._slots.locked()
            slow = asyncio.create_task(
                http.get(server.url, timeout=httpx.Timeout(5.0, pool=5.0)))
            await asyncio.sleep(0.1)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(server.url, timeout=httpx.Timeout(5.0, pool=0.05))
            assert (await slow).text == "hello"


async def test_refused_connection_raises_connect_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")


async def test_gzip_body_is_decoded_by_httpx() -> None:
    import gzip

    data = gzip.compress(b"compressed hello")
    reply = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
             % len(data)) + data
    async with serving(reply) as server, client() as http:
        assert (await http.get(server.url)).text == "compressed hello"


def self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for localhost, and a client context
    that trusts only it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


async def test_https_verifies_the_server_and_reuses_the_connection(tmp_path: Path) -> None:
    server_context, trusting = self_signed(tmp_path)
    async with serving(OK, OK, tls=server_context) as server:
        async with httpx.AsyncClient(transport=AsyncioTransport(2, ssl_context=trusting)) as http:
            assert (await http.get(server.url)).text == "hello"
            assert (await http.get(server.url)).text == "hello"
        assert server.connections == 1
        # The default context (certifi's roots) refuses the self-signed certificate.
        async with httpx.AsyncClient(transport=AsyncioTransport(2)) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(server.url)
