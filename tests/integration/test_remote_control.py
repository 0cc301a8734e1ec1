"""Remote control against a real Celery worker: every inspect reply, field by field,
through Celery's Python API and the ``celery`` command line; then what the control
commands do to a running asyncworker worker, observed with a real Celery client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

from tests.conftest import (
    BROKER_URL,
    PG_DSN,
    REPO,
    WorkerProcess,
    process_env,
    result_of,
    wait_for,
)

pytestmark = pytest.mark.integration

CELERY_APP = "tests.apps.celery_worker:app"
CELERY_ENV = dict(os.environ, CELERY_BROKER_URL=BROKER_URL,
                  CELERY_RESULT_BACKEND="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])


# -- comparing replies ----------------------------------------------------------
def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def assert_same_shape(ours: Any, theirs: Any, path: str = "reply",
                      may_be_null: frozenset[str] = frozenset()) -> None:
    """Same keys at every level, same JSON types (lists: their first items)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{path}: {ours!r} is not an object"
        assert set(ours) == set(theirs), (
            f"{path}: keys differ: only ours {sorted(set(ours) - set(theirs))}, "
            f"only Celery's {sorted(set(theirs) - set(ours))}")
        for key in theirs:
            assert_same_shape(ours[key], theirs[key], f"{path}.{key}", may_be_null)
    elif isinstance(theirs, list):
        assert isinstance(ours, list), f"{path}: {ours!r} is not a list"
        if ours and theirs:
            assert_same_shape(ours[0], theirs[0], f"{path}[0]", may_be_null)
    elif path in may_be_null and None in (ours, theirs):
        return
    else:
        assert _kind(ours) == _kind(theirs), f"{path}: ours {ours!r}, Celery's {theirs!r}"


# -- workers ----------------------------------------------------------------------
class CeleryWorker:
    """A real Celery worker with remote control, on its own queue and node name."""

    def __init__(self, node: str, queue: str, pool: str, log: Path, *extra: str) -> None:
        self.node, self.queue = node, queue
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-P", pool,
             "-Q", queue, "-n", node, "--without-mingle", "--without-gossip",
             "--without-heartbeat", "-l", "INFO", *extra],
            cwd=REPO, env=CELERY_ENV, stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self, busy: bool = False) -> None:
        """Warm stop; a worker still running tasks (``busy``) is killed."""
        if busy:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait_answering(control: Any, node: str) -> None:
    wait_for(lambda: control.ping(destination=[node], timeout=0.5), 60,
             what=f"{node} answering ping")


@pytest.fixture(scope="module")
def pair(services: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
         celery_app: Any) -> Iterator[dict[str, str]]:
    """An idle Celery worker (solo pool: the stats fields a prefork pool gives) and an
    idle asyncworker worker, both with concurrency 1."""
    tmp = tmp_path_factory.mktemp("pair")
    tag = uuid.uuid4().hex[:8]
    celery = CeleryWorker(f"cel-{tag}@test", f"rc.cel.{tag}", "solo", tmp / "celery.log")
    ours = WorkerProcess(["-A", "tests.apps.compat:app", "-Q", f"rc.aw.{tag}", "-c", "1",
                          "-n", f"aw-{tag}@test"], process_env(), tmp / "aw.log")
    try:
        ours.wait_ready()
        wait_answering(celery_app.control, celery.node)
        yield {"celery": celery.node, "ours": f"aw-{tag}@test", "log": str(tmp / "aw.log")}
    finally:
        ours.stop()
        celery.stop()


def api(celery_app: Any, node: str, method: str, arguments: dict[str, Any] | None = None,
        timeout: float = 5) -> Any:
    """One node's reply through ``app.control`` (what ``inspect()`` sends)."""
    replies = celery_app.control.broadcast(method, arguments=arguments or {}, reply=True,
                                           destination=[node], timeout=timeout, limit=1)
    assert replies, f"{node} did not answer {method}"
    return replies[0][node]


def cli(kind: str, method: str, nodes: list[str], *args: str) -> dict[str, Any]:
    """``celery inspect|control METHOD ARGS -d NODES --json``: the replies by node."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", CELERY_APP, kind, method, *args,
         "-d", ",".join(nodes), "--json", "-t", "3"],
        cwd=REPO, env=CELERY_ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    # inspect prints {node: reply}; control prints [{node: reply}, ...].
    replies: dict[str, Any] = printed if isinstance(printed, dict) else {
        node: reply for one in printed for node, reply in one.items()}
    assert set(replies) == set(nodes), replies
    return replies


# Inspect commands with arguments, as the API and the command line send them.
IDLE = {
    "ping": ({}, []),
    "stats": ({}, []),
    "revoked": ({}, []),
    "registered": ({}, []),
    "active_queues": ({}, []),
    "conf": ({}, []),
    "report": ({}, []),
    "clock": ({}, []),
    "memsample": ({}, []),
    "memdump": ({}, []),
    "objgraph": ({}, []),
    "query_task": ({"ids": ["no-such-id"]}, ["no-such-id"]),
    "active": ({}, []),
    "reserved": ({}, []),
    "scheduled": ({}, []),
}


def _compare(method: str, ours: Any, theirs: Any) -> None:
    if method == "conf":
        # Different programs, different settings: the shape of what both have, and
        # no credential anywhere.
        assert isinstance(ours, dict) and isinstance(theirs, dict)
        for key in set(ours) & set(theirs):
            assert_same_shape(ours[key], theirs[key], f"conf.{key}")
        assert "asyncworker:asyncworker@" not in json.dumps(ours)
        assert "***" in ours["result_backend"]
        return
    if method == "objgraph":
        # Neither offers it here (Celery without the objgraph library): an error reply.
        assert set(ours) == set(theirs) == {"error"}
        return
    assert_same_shape(ours, theirs, method)
    if method == "stats":
        assert ours["pool"]["max-concurrency"] == 1
        assert ours["pool"]["processes"] == [ours["pid"]]
        assert ours["prefetch_count"] == 4
        assert ours["broker"] == {**theirs["broker"], "connect_timeout": 10.0,
                                  "heartbeat": 60.0}
        assert "password" not in ours["broker"] and int(ours["clock"]) > 0
    elif method == "registered":
        assert "compat.sleep" in ours and not any(n.startswith("celery.") for n in ours)
        assert "compat.limited [rate_limit=10/s]" in ours
    elif method in ("ping", "active", "reserved", "scheduled", "query_task"):
        assert ours == theirs
    elif method == "active_queues":
        assert [q["name"] for q in ours] == [q["name"].replace("cel", "aw") for q in theirs]
        assert {**ours[0], "name": "", "routing_key": "", "exchange": {}} == {
            **theirs[0], "name": "", "routing_key": "", "exchange": {}}
    elif method == "report":
        assert "software -> asyncworker:" in ours["ok"]
        assert "asyncworker:asyncworker@" not in ours["ok"]
    elif method == "memsample":
        assert ours.endswith("MB") and float(ours[:-2]) > 0


@pytest.mark.parametrize("method", sorted(IDLE))
def test_inspect_api_matches_celery(celery_app: Any, pair: dict[str, str], method: str) -> None:
    arguments = IDLE[method][0]
    ours = api(celery_app, pair["ours"], method, arguments)
    theirs = api(celery_app, pair["celery"], method, arguments)
    _compare(method, ours, theirs)


@pytest.mark.parametrize("method", sorted(set(IDLE) - {"memdump", "objgraph"}))
def test_inspect_cli_matches_celery(pair: dict[str, str], method: str) -> None:
    replies = cli("inspect", method, [pair["ours"], pair["celery"]], *IDLE[method][1])
    _compare(method, replies[pair["ours"]], replies[pair["celery"]])


def test_registered_with_taskinfoitems(celery_app: Any, pair: dict[str, str]) -> None:
    items = {"taskinfoitems": ["rate_limit", "acks_late"]}
    ours = api(celery_app, pair["ours"], "registered", items)
    assert_same_shape(ours, api(celery_app, pair["celery"], "registered", items))
    assert "compat.limited [rate_limit=10/s]" in ours
    assert "compat.sleep_late [acks_late=True]" in ours


def test_hello_clock_and_heartbeat(celery_app: Any, pair: dict[str, str]) -> None:
    """Mingle's hello merges revoked ids and answers ours with the clock; heartbeat
    (sent all the time by monitors) is answered as Celery answers it, without a warning."""
    revoked_id = str(uuid.uuid4())
    arguments = {"from_node": "someone@else", "revoked": [revoked_id]}
    ours = api(celery_app, pair["ours"], "hello", arguments)
    assert_same_shape(ours, api(celery_app, pair["celery"], "hello", arguments))
    assert revoked_id in ours["revoked"]
    assert revoked_id in api(celery_app, pair["ours"], "revoked")
    later = api(celery_app, pair["ours"], "clock")["clock"]
    assert later > ours["clock"]
    assert api(celery_app, pair["ours"], "heartbeat") is None
    assert api(celery_app, pair["celery"], "heartbeat") is None
    celery_app.control.heartbeat(destination=[pair["ours"]])
    # The mailbox handles messages in order: once ping is answered, heartbeat was seen.
    api(celery_app, pair["ours"], "ping")
    log = Path(pair["log"]).read_text()
    assert "no such control command" not in log and "heartbeat" not in log


def test_unknown_command_answers_an_error(celery_app: Any, pair: dict[str, str]) -> None:
    ours = api(celery_app, pair["ours"], "no_such_thing")
    assert ours == api(celery_app, pair["celery"], "no_such_thing") == {
        "error": "KeyError('no_such_thing')"}
    assert api(celery_app, pair["ours"], "ping") == {"ok": "pong"}


def test_busy_inspect_matches_celery(celery_app: Any, start_worker: Callable[..., Any],
                                     tmp_path: Path) -> None:
    """One task running, two waiting for the slot, one held for its ETA, on both."""
    tag = uuid.uuid4().hex[:8]
    celery = CeleryWorker(f"celb-{tag}@test", f"rc.celb.{tag}", "threads", tmp_path / "c.log",
                          "-c", "1")
    try:
        ours = f"awb-{tag}@test"
        start_worker("-Q", f"rc.awb.{tag}", "-c", "1", "-n", ours, worker_shutdown_timeout=1)
        wait_answering(celery_app.control, celery.node)
        sent: dict[str, list[str]] = {}
        for node, queue, task in ((ours, f"rc.awb.{tag}", "compat.sleep"),
                                  (celery.node, celery.queue, "celery_side.sleep")):
            sent[node] = [celery_app.send_task(task, [60], queue=queue).id for _ in range(3)]
            sent[node].append(celery_app.send_task(task, [1], queue=queue, countdown=600).id)

        def loaded(node: str) -> dict[str, Any] | None:
            got = {m: api(celery_app, node, m) for m in ("active", "reserved", "scheduled")}
            counts = [len(got["active"]), len(got["reserved"]), len(got["scheduled"])]
            return got if counts == [1, 2, 1] else None

        mine = wait_for(lambda: loaded(ours), 30, what="our worker loaded")
        theirs = wait_for(lambda: loaded(celery.node), 30, what="Celery worker loaded")
        may_be_null = frozenset({"active[0].delivery_info.priority",
                                 "reserved[0].delivery_info.priority",
                                 "scheduled[0].request.delivery_info.priority"})
        for method in ("active", "reserved", "scheduled"):
            assert_same_shape(mine[method], theirs[method], method, may_be_null)
        running = mine["active"][0]
        assert running["id"] == sent[ours][0] and running["args"] == [60]
        assert running["hostname"] == ours and running["acknowledged"] is True
        assert running["worker_pid"] and running["time_start"]
        assert {r["id"] for r in mine["reserved"]} == set(sent[ours][1:3])
        assert mine["scheduled"][0]["request"]["id"] == sent[ours][3]
        ids = {"ids": [sent[ours][0], sent[ours][1], sent[ours][3]]}
        found = api(celery_app, ours, "query_task", ids)
        assert {k: v[0] for k, v in found.items()} == {
            sent[ours][0]: "active", sent[ours][1]: "reserved", sent[ours][3]: "scheduled"}
        cel_ids = {"ids": [sent[celery.node][0], sent[celery.node][1]]}
        assert_same_shape(found[sent[ours][0]], api(celery_app, celery.node, "query_task",
                                                    cel_ids)[sent[celery.node][0]],
                          "query_task", frozenset({"query_task[0].delivery_info.priority"}))
        replies = cli("inspect", "active", [ours, celery.node])
        assert_same_shape(replies[ours], replies[celery.node], "active", may_be_null)
        # Clean up: terminate ours (the command line's terminate: signal, then ids).
        reply = cli("control", "terminate", [ours], "SIGKILL", sent[ours][0])
        assert reply[ours] == {"ok": f"terminate: {sent[ours][0]}"}
    finally:
        celery.stop(busy=True)


# -- control commands --------------------------------------------------------------
def test_terminate_running_task_is_revoked_terminated(celery_app: Any, start_worker: Any,
                                                      queue_name: str) -> None:
    node = f"term-{queue_name}@test"
    start_worker("-Q", queue_name, "-c", "2", "-n", node)
    running = celery_app.send_task("compat.sleep_early", [60], queue=queue_name)
    sibling = celery_app.send_task("compat.sleep", [0.5], queue=queue_name)
    wait_for(lambda: [t["id"] for t in api(celery_app, node, "active")].count(running.id),
             30, what="running")
    reply = cli("control", "terminate", [node], "SIGTERM", running.id)
    assert reply[node] == {"ok": f"terminate: {running.id}"}
    with pytest.raises(TaskRevokedError, match="terminated"):
        result_of(running)
    assert running.state == "REVOKED"
    assert result_of(sibling)["end"] > 0
    assert running.id in api(celery_app, node, "revoked")


def test_revoke_by_stamped_headers(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    node = f"stamp-{queue_name}@test"
    start_worker("-Q", queue_name, "-c", "2", "-n", node)
    stamp = uuid.uuid4().hex
    running = celery_app.send_task("compat.sleep", [60], queue=queue_name,
                                   stamped_headers=["batch"], batch=stamp)
    wait_for(lambda: api(celery_app, node, "active"), 30, what="running")
    reply = celery_app.control.revoke_by_stamped_headers({"batch": stamp}, terminate=True,
                                                         destination=[node], reply=True,
                                                         timeout=5)
    assert stamp in reply[0][node]["ok"] and "revoked" in reply[0][node]["ok"]
    with pytest.raises(TaskRevokedError, match="terminated"):
        result_of(running)
    later = celery_app.send_task("compat.add_async", [1, 2], queue=queue_name,
                                 stamped_headers=["batch"], batch=stamp)
    with pytest.raises(TaskRevokedError, match="revoked"):
        result_of(later)
    other = celery_app.send_task("compat.add_async", [1, 2], queue=queue_name,
                                 stamped_headers=["batch"], batch="another")
    assert result_of(other) == 3


def test_rate_limit_live(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    node = f"rate-{queue_name}@test"
    start_worker("-Q", queue_name, "-c", "4", "-n", node, worker_shutdown_timeout=1)
    assert api(celery_app, node, "rate_limit",
               {"task_name": "no.such", "rate_limit": "1/m"}) == {"error": "unknown task"}
    assert "error" in api(celery_app, node, "rate_limit",
                          {"task_name": "compat.add_async", "rate_limit": "fast"})
    reply = celery_app.control.rate_limit("compat.add_async", "1/h", destination=[node],
                                          reply=True, timeout=5)
    assert reply == [{node: {"ok": "new rate limit set successfully"}}]
    first = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name)
    second = celery_app.send_task("compat.add_async", [2, 2], queue=queue_name)
    assert result_of(first) == 2
    # The second waits an hour for its turn, holding no slot.
    wait_for(lambda: [t["id"] for t in api(celery_app, node, "reserved")] == [second.id], 30,
             what="second task throttled")
    assert not second.ready()
    assert result_of(celery_app.send_task("compat.add_sync", [3, 3], queue=queue_name)) == 6


def test_time_limit_live(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    node = f"tl-{queue_name}@test"
    start_worker("-Q", queue_name, "-n", node)
    reply = cli("control", "time_limit", [node], "compat.sleep", "0.2", "0.5")
    assert reply[node] == {"ok": "time limits set successfully"}
    limited = celery_app.send_task("compat.sleep", [30], queue=queue_name)
    with pytest.raises(SoftTimeLimitExceeded):
        result_of(limited)
    assert celery_app.control.time_limit("compat.sleep", soft=None, hard=0.3,
                                         destination=[node], reply=True, timeout=5)
    with pytest.raises(TimeLimitExceeded):
        result_of(celery_app.send_task("compat.sleep", [30], queue=queue_name))
    assert celery_app.control.time_limit("compat.sleep", soft=None, hard=None,
                                         destination=[node], reply=True, timeout=5)
    assert result_of(celery_app.send_task("compat.sleep", [0.7], queue=queue_name))["end"] > 0


def _consumers(celery_app: Any, queue: str) -> tuple[int, int]:
    with celery_app.connection_for_write() as conn:
        ok = conn.default_channel.queue_declare(queue, passive=True)
        return ok.message_count, ok.consumer_count


def test_add_and_cancel_consumer(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    node = f"cons-{queue_name}@test"
    extra = f"{queue_name}.extra"
    start_worker("-Q", queue_name, "-n", node)
    reply = celery_app.control.add_consumer(extra, destination=[node], reply=True, timeout=5)
    assert reply == [{node: {"ok": f"add consumer {extra}"}}]
    names = [q["name"] for q in api(celery_app, node, "active_queues")]
    assert names == [queue_name, extra]
    assert result_of(celery_app.send_task("compat.add_async", [2, 3], queue=extra)) == 5
    reply = cli("control", "cancel_consumer", [node], extra)
    assert reply[node] == {"ok": f"no longer consuming from {extra}"}
    assert [q["name"] for q in api(celery_app, node, "active_queues")] == [queue_name]
    waiting = celery_app.send_task("compat.add_async", [2, 3], queue=extra)
    wait_for(lambda: _consumers(celery_app, extra) == (1, 0), 10, what="message left queued")
    assert not waiting.ready()
    assert result_of(celery_app.send_task("compat.add_async", [1, 3], queue=queue_name)) == 4


def test_pool_grow_shrink_and_autoscale(celery_app: Any, start_worker: Any,
                                        queue_name: str) -> None:
    node = f"pool-{queue_name}@test"
    start_worker("-Q", queue_name, "-c", "1", "-n", node, worker_shutdown_timeout=1)

    def pool() -> tuple[int, int]:
        stats = api(celery_app, node, "stats")
        return stats["pool"]["max-concurrency"], stats["prefetch_count"]

    assert pool() == (1, 4)
    reply = celery_app.control.pool_grow(2, destination=[node], reply=True, timeout=5)
    assert reply == [{node: {"ok": "pool will grow"}}]
    assert pool() == (3, 12)
    long = [celery_app.send_task("compat.sleep", [60], queue=queue_name) for _ in range(3)]
    wait_for(lambda: len(api(celery_app, node, "active")) == 3, 30, what="three at once")
    assert api(celery_app, node, "pool_shrink", {"n": 2}) == {"ok": "pool will shrink"}
    assert pool() == (1, 4)
    # Running tasks keep their slots; a new one waits until only one runs.
    queued = celery_app.send_task("compat.add_async", [1, 1], queue=queue_name)
    wait_for(lambda: [t["id"] for t in api(celery_app, node, "reserved")] == [queued.id], 30,
             what="new task waiting for a slot")
    reply = cli("control", "autoscale", [node], "6", "2")
    assert reply[node] == {"ok": "autoscale now max=6 min=2"}
    assert pool() == (6, 24)
    assert result_of(queued) == 2
    for result in long:
        celery_app.control.revoke(result.id, terminate=True, destination=[node])


def test_destructive_commands_refused_when_disabled(celery_app: Any, start_worker: Any,
                                                    queue_name: str) -> None:
    node = f"safe-{queue_name}@test"
    worker = start_worker("-Q", queue_name, "-c", "2", "-n", node,
                          worker_control_allow_destructive="false")
    running = celery_app.send_task("compat.sleep", [1.5], queue=queue_name)
    wait_for(lambda: api(celery_app, node, "active"), 30, what="running")
    refused = {
        "shutdown": {},
        "revoke": {"task_id": running.id, "terminate": True},
        "terminate": {"signal": "TERM", "task_id": running.id},
        "pool_grow": {"n": 1},
        "autoscale": {"max": 5, "min": 1},
        "add_consumer": {"queue": f"{queue_name}.x"},
        "cancel_consumer": {"queue": queue_name},
        "rate_limit": {"task_name": "compat.add_async", "rate_limit": "1/h"},
        "time_limit": {"task_name": "compat.sleep", "soft": 0.1, "hard": 0.2},
    }
    for method, arguments in refused.items():
        reply = api(celery_app, node, method, arguments)
        assert set(reply) == {"error"} and "worker_control_allow_destructive" in reply["error"], \
            (method, reply)
    assert result_of(running)["end"] > 0  # not terminated
    assert api(celery_app, node, "stats")["pool"]["max-concurrency"] == 2
    assert [q["name"] for q in api(celery_app, node, "active_queues")] == [queue_name]
    # Inspecting and plain revoke still work.
    assert api(celery_app, node, "revoke", {"task_id": "x"})["ok"].startswith("tasks x")
    assert worker.proc.poll() is None
    assert len(worker.events("control command refused")) == len(refused)


def test_shutdown_exits_warm(celery_app: Any, start_worker: Any, queue_name: str) -> None:
    node = f"down-{queue_name}@test"
    worker = start_worker("-Q", queue_name, "-c", "2", "-n", node)
    running = celery_app.send_task("compat.sleep", [1.0], queue=queue_name)
    wait_for(lambda: api(celery_app, node, "active"), 30, what="running")
    # No reply is sent (as Celery): a reply=True broadcast gets nothing back.
    assert celery_app.control.broadcast("shutdown", destination=[node], reply=True,
                                        timeout=1) == []
    assert worker.wait_exit(30) == 0
    assert result_of(running)["end"] > 0  # warm: the running task finished
    assert worker.events("shutdown requested by remote control")
