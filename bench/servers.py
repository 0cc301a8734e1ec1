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
#: Where ``python -m bench`` finds an S3 server already running instead of starting moto
#: (moto answers ~270 requests/s here, which caps the vision workload at ~135 tasks/s).
S3_URL_ENV = "BENCH_S3_ENDPOINT"
S3_KEY_ENV = ("BENCH_S3_ACCESS_KEY_ID", "BENCH_S3_SECRET_ACCESS_KEY")


@dataclass
class Server:
    """A running server process and its base URL."""

    url: str
    process: subprocess.Popen[str] | None  # None: a server this module did not start

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


def s3_server(url: str = "") -> Server:
    """The S3 server at ``url`` (or ``$BENCH_S3_ENDPOINT``) if given, else a new moto server.

    Any S3-compatible server will do (MinIO, for one): the bench only creates a
    bucket and gets and puts objects.
    """
    url = url or os.environ.get(S3_URL_ENV, "")
    return Server(url.rstrip("/"), None) if url else start_s3()


def s3_name(server: Server) -> str:
    """How reports name the S3 server."""
    return "moto" if server.process is not None else server.url


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
    return Server(url, process)


def start_fake_openai(*args: str, timeout: float = 30.0) -> Server:
    """The project's fake model API; ``args`` are its command-line options."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_openai", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()
    if not line.startswith("listening on ") or time.monotonic() > deadline:
        Server("", process).stop()
        raise RuntimeError(f"fake model API did not start: {line!r}")
    return Server(line.split()[-1] + "/v1", process)


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
