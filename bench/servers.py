"""Start the loopback test servers (S3 and the fake model API) as child processes.

``python -m bench.servers ENV_FILE [BUCKET]`` starts both for the demo, writes
the worker's ``ASYNCWORKER_*`` settings for them to ``ENV_FILE`` and runs until
terminated.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

S3_CREDENTIALS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}
#: Which S3 server the bench uses when no option says: ``moto`` (the default),
#: ``moto-keepalive`` (moto under waitress: keeps connections open, as real S3 does),
#: or the URL of an S3 server already running, MinIO for one. moto answers ~270
#: requests/s here, which caps the vision workload at ~135 tasks/s.
S3_SERVER_ENV = "BENCH_S3_SERVER"
S3_KINDS = ("moto", "moto-keepalive")
S3_KEY_ENV = ("BENCH_S3_ACCESS_KEY_ID", "BENCH_S3_SECRET_ACCESS_KEY")


@dataclass
class Server:
    """A running server process and its base URL."""

    url: str
    process: subprocess.Popen[str] | None  # None: a server this module did not start
    name: str = ""

    def stop(self) -> None:
        """Terminate the process (and anything it started)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, process: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            # Any HTTP answer (even 404/403) means it is up.
            if getattr(exc, "code", None):
                return
        time.sleep(0.1)
    raise TimeoutError(f"server for {url} did not start")


def s3_credentials() -> tuple[str, str]:
    """The S3 access key and secret: moto's (any will do) unless the environment names others."""
    return (os.environ.get(S3_KEY_ENV[0], S3_CREDENTIALS["s3_access_key_id"]),
            os.environ.get(S3_KEY_ENV[1], S3_CREDENTIALS["s3_secret_access_key"]))


def s3_server(spec: str = "") -> Server:
    """The S3 server ``spec`` names (else ``$BENCH_S3_SERVER``, else moto), started if need be.

    A URL is a server already running; any S3-compatible one will do (MinIO, for
    one): the bench only creates a bucket and gets and puts objects.
    """
    spec = spec or os.environ.get(S3_SERVER_ENV, "") or "moto"
    if spec == "moto":
        return start_s3()
    if spec == "moto-keepalive":
        server = _start_module("bench.moto_keepalive")
        server.name = spec
        return server
    if spec.startswith(("http://", "https://")):
        return Server(spec.rstrip("/"), None, spec.rstrip("/"))
    raise ValueError(f"S3 server: one of {', '.join(S3_KINDS)} or a URL, not {spec!r}")


def start_s3(timeout: float = 30.0) -> Server:
    """moto's S3 API in server mode on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, process, time.monotonic() + timeout)
    except Exception:
        Server(url, process).stop()
        raise
    return Server(url, process, "moto")


def start_fake_openai(*args: str, timeout: float = 30.0) -> Server:
    """The project's fake model API; ``args`` are its command-line options."""
    server = _start_module("bench.fake_openai", *args, timeout=timeout)
    server.url += "/v1"
    return server


def _start_module(module: str, *args: str, timeout: float = 30.0) -> Server:
    """``python -m module --port 0 ARGS``, which prints ``listening on URL`` when it is up."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()
    if not line.startswith("listening on ") or time.monotonic() > deadline:
        Server("", process).stop()
        raise RuntimeError(f"{module} did not start: {line!r}")
    return Server(line.split()[-1], process, module)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Stop the given servers on exit."""
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def serve_for_demo(env_file: str, bucket: str) -> None:
    """Start both servers, write the worker's settings to ``env_file``, run until killed."""
    s3 = start_s3()
    gpt = start_fake_openai("--latency", "uniform:0.5:1.5")
    with running(s3, gpt):
        create_bucket(s3.url, bucket)
        settings = {"S3_ENDPOINT_URL": s3.url, "S3_BUCKET": bucket,
                    "S3_ACCESS_KEY_ID": S3_CREDENTIALS["s3_access_key_id"],
                    "S3_SECRET_ACCESS_KEY": S3_CREDENTIALS["s3_secret_access_key"],
                    "GPT_BASE_URL": gpt.url, "GPT_API_KEY": "sk-local-demo"}
        partial = env_file + ".part"
        with open(partial, "w") as out:
            out.writelines(f"ASYNCWORKER_{k}={v}\n" for k, v in settings.items())
        os.replace(partial, env_file)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on the S3 server (boto3, synchronously)."""
    client = s3_client(endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)


def s3_client(endpoint: str) -> Any:
    """A synchronous boto3 client for the bench's own set-up calls."""
    import boto3

    key, secret = s3_credentials()
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret)


if __name__ == "__main__":
    serve_for_demo(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "growbin-images")
