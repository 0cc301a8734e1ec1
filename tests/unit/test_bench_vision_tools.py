"""The vision bench's helpers: py-spy stack summaries and the S3 server choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import servers, stacks

TOP = "<module> (bench/vision_cost.py:10);run (asyncio/runners.py:1)"
CALL = "_make_api_call (aiobotocore/client.py:5)"
RAW = "\n".join([
    f"{TOP};{CALL};sign (botocore/auth.py:7) 30",
    f"{TOP};{CALL} 10",
    f"{TOP};select (selectors.py:3) 50",
    "<module> (/x/site-packages/aiohttp/client.py:3);"
    "write (/x/lib/python3.11/asyncio/transports.py:1) 10",
])


def test_stacks_summary_by_package(tmp_path: Path) -> None:
    profile = tmp_path / "p.txt"
    profile.write_text(RAW)
    text = stacks.summarise([profile], top=5)
    assert "Busy samples: 50 (idle, left out: 50)" in text
    assert "| botocore | 60.0 |" in text  # self time
    assert "| aiobotocore | 80.0 |" in text  # inclusive
    assert "| stdlib:asyncio | 20.0 |" in text  # full paths name the standard library


@pytest.mark.parametrize(("path", "package"), [
    ("botocore/auth.py", "botocore"), ("selectors.py", "selectors"),
    ("/v/lib/python3.11/site-packages/aiohttp/client.py", "aiohttp"),
    ("/usr/lib/python3.11/json/encoder.py", "stdlib:json"),
    ("/work/tree/asyncworker/app.py", "asyncworker"),
])
def test_stacks_package_of_a_path(path: str, package: str) -> None:
    assert stacks.package(path) == package


def test_s3_server_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(servers.S3_SERVER_ENV, raising=False)
    running = servers.s3_server("http://127.0.0.1:9000/")
    assert (running.url, running.process, running.name) == (
        "http://127.0.0.1:9000", None, "http://127.0.0.1:9000")
    running.stop()  # not ours: nothing to stop
    monkeypatch.setenv(servers.S3_SERVER_ENV, "https://s3.example")
    assert servers.s3_server().url == "https://s3.example"
    with pytest.raises(ValueError, match="moto-keepalive"):
        servers.s3_server("minio")
    monkeypatch.setenv(servers.S3_KEY_ENV[0], "admin")
    assert servers.s3_credentials() == ("admin", "testing")
