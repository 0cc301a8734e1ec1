"""A private RabbitMQ, PostgreSQL and Redis, for tests that stop, kill or reconfigure them.

The shared services (``deploy/local/services.sh start``) serve every other
test, so a test that takes a server down runs its own set, started by the
same script with a state directory and ports of its own:

    services = PrivateServices(tmp_path / "services", consumer_timeout_ms=3000)
    services.start()
    ...  # services.broker_url, services.pg_dsn, services.redis_url
    services.rabbitmqctl("stop_app"); services.rabbitmqctl("start_app")
    services.stop()

``PrivateRedis`` is one more Redis, durable (append-only file, fsync on every
write), for a Redis *broker* that a test kills or restarts while the set's own
Redis keeps the test's records.

``RabbitCluster`` starts several RabbitMQ nodes alone (no PostgreSQL or Redis),
each a ``PrivateServices`` of its own, and joins them into one cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "services.sh"


def alive(pid: int) -> bool:
    """Process ``pid`` runs (a zombie left for an absent parent to reap does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateServices:
    """One RabbitMQ node, one PostgreSQL cluster and one Redis of a test's own."""

    def __init__(self, state_dir: Path, consumer_timeout_ms: int | None = None) -> None:
        self.state_dir = state_dir
        self.amqp_port, self.pg_port, self.redis_port = free_port(), free_port(), free_port()
        # RabbitMQ's default (AMQP port + 20000) can be past 65535 for a port the OS picks.
        self.dist_port = free_port()
        self.consumer_timeout_ms = consumer_timeout_ms

    @property
    def env(self) -> dict[str, str]:
        """The environment ``services.sh`` is run with for this set."""
        env = dict(os.environ, ASYNCWORKER_STATE_DIR=str(self.state_dir),
                   ASYNCWORKER_AMQP_PORT=str(self.amqp_port),
                   ASYNCWORKER_PG_PORT=str(self.pg_port),
                   ASYNCWORKER_REDIS_PORT=str(self.redis_port),
                   ASYNCWORKER_RABBIT_DIST_PORT=str(self.dist_port))
        if self.consumer_timeout_ms is not None:
            env["ASYNCWORKER_RABBIT_CONSUMER_TIMEOUT"] = str(self.consumer_timeout_ms)
        return env

    @property
    def broker_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def pg_dsn(self) -> str:
        return f"postgresql://asyncworker:asyncworker@127.0.0.1:{self.pg_port}/asyncworker"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``services.sh ARGS`` for this set (raises if it fails)."""
        # In the state directory: a RabbitMQ node restarted after a crash writes its
        # crash dumps to its working directory.
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, check=True,
                              cwd=self.state_dir,
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        """Start all three and wait until they answer."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.run("start")

    def stop(self) -> None:
        """Stop all three (their state stays in ``state_dir``)."""
        self.run("stop")

    def rabbitmqctl(self, *args: str) -> str:
        """Run ``rabbitmqctl ARGS`` against this set's node; its output."""
        return self.run("rabbitmqctl", *args).stdout

    # -- RabbitMQ alone (a cluster's node) -----------------------------------
    @property
    def rabbit_node(self) -> str:
        """This set's Erlang node name (``services.sh`` derives it from the AMQP port)."""
        return self.run("rabbitmq-node").stdout.strip()

    def rabbit_pid(self) -> int:
        """The node's Erlang VM (beam) process."""
        return int((self.state_dir / "rabbitmq" / "rabbit.pid").read_text().split()[0])

    def kill_rabbitmq(self) -> None:
        """``kill -9`` the node's VM and wait until it is gone."""
        pid = self.rabbit_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


class PrivateRedis:
    """A Redis server of a test's own, persisted to an append-only file.

    ``appendfsync always``: a write Redis has answered survives its ``kill -9``, as
    a message RabbitMQ has confirmed does, so a fault counts the worker's losses and
    not Redis's (with ``everysec``, the common setting, up to a second of writes can
    go with a crash; with no persistence, the local services' setting, everything).
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", self.port))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def start(self, timeout: float = 30) -> None:
        """Start (again, on the same files and port) and wait until it answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "redis.log", "ab")  # noqa: SIM115 - the server's, kept open
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.state_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("private redis did not start: "
                                   + (self.state_dir / "redis.log").read_text()[-2000:])
            time.sleep(0.05)

    def kill9(self) -> None:
        """``kill -9`` the server and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        """A clean ``SHUTDOWN`` (the file is complete), or ``kill -9`` if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()


class RabbitCluster:
    """``size`` RabbitMQ nodes on loopback, each with its own state directory, AMQP
    port, node name and distribution port, joined into one cluster.

    ``state_dir`` must be readable by other users (0755, e.g. under a
    ``tempfile.mkdtemp`` chmod-ed so): RabbitMQ runs as its own user.
    """

    def __init__(self, state_dir: Path, size: int = 3) -> None:
        self.nodes = [PrivateServices(state_dir / f"node{i + 1}") for i in range(size)]

    @property
    def broker_urls(self) -> list[str]:
        """Every node's URL, the first node's first."""
        return [node.broker_url for node in self.nodes]

    def start(self) -> None:
        """Start every node, then join the others to the first one's cluster."""
        for node in self.nodes:
            node.state_dir.mkdir(parents=True, exist_ok=True)
            node.run("rabbitmq-start")
        seed = self.nodes[0].rabbit_node
        for node in self.nodes[1:]:
            node.run("rabbitmq-join", seed)

    def stop(self) -> None:
        """Stop every node still running (a killed one has nothing to stop)."""
        for node in self.nodes:
            node.run("rabbitmq-stop")

    def node_of_connection(self, connection_name: str) -> PrivateServices | None:
        """The node a client connection named ``connection_name`` is open on, if any."""
        listing = self.nodes_up()[0].rabbitmqctl(
            "-q", "list_connections", "port", "client_properties")
        for line in listing.splitlines():
            port, _, properties = line.partition("\t")
            if f'"{connection_name}"' in properties or f"<<\"{connection_name}\">>" in properties:
                return next((n for n in self.nodes if str(n.amqp_port) == port), None)
        return None

    def nodes_up(self) -> list[PrivateServices]:
        """The nodes whose VM runs."""
        return [n for n in self.nodes if alive(n.rabbit_pid())]
