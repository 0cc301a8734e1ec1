"""The S3 client's HTTP session on the asyncio transport, against a scripted local server.

What aiobotocore sees must not change: the request goes out as botocore signed
it, the answers parse to the same results and errors, a streamed body reads
whole, and a refused connection is botocore's ``EndpointConnectionError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import pytest
from botocore.awsrequest import HeadersDict
from botocore.exceptions import EndpointConnectionError

from asyncworker.contrib.vision import s3
from asyncworker.contrib.vision.s3_session import PREREAD_MAX, LowerHeaders, StreamsSession
from asyncworker.contrib.vision.settings import VisionSettings
from tests.unit.test_vision_http_transport import serving

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
GOT = (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n"
       b"Content-Encoding: gzip\r\nETag: \"abc\"\r\n"
       b"Last-Modified: Mon, 30 Nov 2026 10:00:00 GMT\r\n\r\n" % len(PNG)) + PNG
PUT = b"HTTP/1.1 200 OK\r\nETag: \"def\"\r\nContent-Length: 0\r\n\r\n"
MISSING_BODY = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>"
                b"<Message>gone</Message></Error>")
MISSING = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n"
           b"Content-Length: %d\r\n\r\n" % len(MISSING_BODY)) + MISSING_BODY


def settings(url: str) -> VisionSettings:
    return VisionSettings(s3_endpoint_url=url, s3_access_key_id="k", s3_secret_access_key="s",
                          s3_max_attempts=1)


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Any]:
    async with aioboto3.Session().client("s3", **s3.client_options(settings(url), 4)) as c:
        yield c


def test_client_options_choose_the_session_unless_a_proxy_applies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = "http://s3.internal:9000"
    assert s3.client_options(settings(url), 4)["config"].http_session_cls is StreamsSession
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    assert s3.client_options(settings(url), 4)["config"].http_session_cls is not StreamsSession


async def test_get_and_put_go_out_as_signed_and_parse_as_before() -> None:
    async with serving(GOT, PUT) as server, client(server.url) as c:
        data, content_type = await s3.get_bytes(c, s3.S3Path("bkt", "images/a b+1.png"))
        await s3.put_bytes(c, s3.S3Path("bkt", "analysis/1.json"), b'{"a": 1}',
                           "application/json")
    # The body exactly as sent, though it says gzip: botocore never decodes S3 objects.
    assert (data, content_type) == (PNG, "image/png")
    assert server.connections == 1  # kept alive for the second call
    get, put = server.requests
    head = get.split(b"\r\n\r\n")[0].lower()
    # The key's encoding is botocore's, as signed: a decoded or re-encoded path would not match.
    assert get.startswith(b"GET /bkt/images/a%20b%2B1.png HTTP/1.1\r\n")
    assert b"\r\nhost: localhost:" in head and b"\r\naccept-encoding: identity" in head
    assert b"\r\nauthorization: aws4-hmac-sha256 " in head
    assert b"content-length" not in head
    assert put.startswith(b"PUT /bkt/analysis/1.json HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 8\r\n" in put.lower()
    assert put.endswith(b'\r\n\r\n{"a": 1}')


async def test_error_answer_is_botocores_client_error() -> None:
    async with serving(MISSING) as server, client(server.url) as c:
        with pytest.raises(s3.ObjectNotFound):
            await s3.get_bytes(c, s3.S3Path("bkt", "gone.png"))
        assert server.connections == 1


async def test_streamed_body_reads_whole_and_frees_the_connection() -> None:
    async with serving(GOT, GOT) as server, client(server.url) as c:
        for _ in range(2):
            response = await c.get_object(Bucket="bkt", Key="a.png")
            async with response["Body"] as body:
                assert await body.read() == PNG
            assert response["ETag"] == '"abc"'
    assert server.connections == 1


async def test_refused_connection_is_an_endpoint_connection_error() -> None:
    async with serving() as server:
        url = server.url
    async with client(url) as c:
        with pytest.raises(EndpointConnectionError):
            await c.head_object(Bucket="bkt", Key="a.png")


async def test_server_closing_without_an_answer_is_retried_by_botocore() -> None:
    async with serving(None, PUT) as server:
        options = s3.client_options(VisionSettings(
            s3_endpoint_url=server.url, s3_access_key_id="k", s3_secret_access_key="s",
            s3_max_attempts=2), 4)
        async with aioboto3.Session().client("s3", **options) as c:
            await s3.put_bytes(c, s3.S3Path("bkt", "a.json"), b"{}", "application/json")
    assert len(server.requests) == 2 and server.connections == 2


async def test_small_streamed_body_comes_with_the_head_and_frees_the_connection() -> None:
    # Two gets before either body is read: the first connection is already
    # back in the pool, so the second call reuses it.
    async with serving(GOT, GOT) as server, client(server.url) as c:
        first = await c.get_object(Bucket="bkt", Key="a.png")
        second = await c.get_object(Bucket="bkt", Key="b.png")
        for response in (first, second):
            async with response["Body"] as body:
                assert await body.read() == PNG
            assert response["ContentType"] == "image/png"
    assert server.connections == 1


async def test_large_streamed_body_is_left_to_the_caller() -> None:
    big = bytes(range(256)) * (PREREAD_MAX // 256 + 1)
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
             % len(big)) + big
    async with serving(reply, reply) as server, client(server.url) as c:
        first = await c.get_object(Bucket="bkt", Key="a.png")
        second = await c.get_object(Bucket="bkt", Key="b.png")  # the first still holds one
        for response in (first, second):
            async with response["Body"] as body:
                assert await body.read() == big
    assert server.connections == 2


def test_lower_headers_is_botocores_case_insensitive_mapping() -> None:
    headers = LowerHeaders({"etag": '"abc"', "content-type": "image/png"})
    assert isinstance(headers, HeadersDict)
    assert headers["ETag"] == '"abc"' and "CONTENT-TYPE" in headers
    assert "Expires" not in headers and headers.get("Expires") is None
    assert headers.get("X-Missing", "-") == "-" and 3 not in headers
    with pytest.raises(KeyError):
        headers["Expires"]
    copy = headers.copy()
    copy["X-Amz-Meta-A"] = "1"
    del copy["ETag"]
    assert list(copy) == ["content-type", "x-amz-meta-a"]
    assert list(headers) == ["etag", "content-type"] and len(headers) == 2
