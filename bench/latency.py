"""Latency under an open-loop load, and the latency curve.

Why not publish from the bench process and time from there: a publisher that
shares the bench's interpreter (and its result polling) slows down when the
machine is busy, and a measurement that starts the moment the consumer appears
counts the worker's warm-up (connections, pools, first allocations) as
latency. So here:

* an **open-loop publisher in its own process** (``python -m bench.latency
  publish``) sends at a fixed rate on its own clock, whatever the worker does,
  and never waits for results. It writes AMQP frames prebuilt from Celery's own
  ``as_task_v2`` message, only the task id changed per send, on an aiormq
  connection: a few microseconds a message, so it takes little CPU from the
  worker on a small machine; ``--publisher kombu``
  sends each with Celery's ``send_task`` instead (what an application does, and
  what the bench did before), to measure what the publisher's CPU costs;
* each message carries its **send stamp** in its task id
  (``<prefix>-<seq>-<nanoseconds>``), taken just before the publish: the id is
  in the message and in the result row, so latency needs no side channel;
* latency = the result row's ``date_done`` (stamped by the worker when the
  result is ready, before the batched write) - the send stamp, same clock;
* the first ``warmup`` seconds of sends are left out (reported separately).

A **curve** runs one warm worker at several fractions of a peak rate (25, 50,
75 and 90% of the throughput measured with a pre-filled queue) and gives
p50/p95/p99 at each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .measure import TreeSampler, percentile, wait_until

#: Fractions of the peak throughput a curve is measured at.
CURVE_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
PERCENTILES = (50, 95, 99)
#: How the publisher process sends: prebuilt messages over aiormq, or Celery's send_task.
PUBLISHERS = ("amqp", "kombu")
#: The publisher's shortest sleep: waking for every message at thousands a second
#: would cost it more CPU than sending them.
TICK = 0.001


# -- pure arithmetic (unit-tested) ---------------------------------------------------
def due(rate: float, elapsed: float, total: int) -> int:
    """How many of ``total`` messages an open-loop schedule at ``rate``/s has sent by
    ``elapsed`` seconds: message i is due at i / rate (the first at once)."""
    if elapsed < 0:
        return 0
    return min(total, math.floor(elapsed * rate) + 1)


def stamp_id(prefix: str, seq: int, sent_ns: int) -> str:
    """A task id carrying its send stamp: ``<prefix>-<seq>-<ns since the epoch>``, the
    numbers zero-padded to a fixed width (9 and 19 digits), so that every id of a
    prefix has one length and a prebuilt message can take it in place."""
    return f"{prefix}-{seq:09d}-{sent_ns:019d}"


def parse_stamp(task_id: str, prefix: str) -> tuple[int, float] | None:
    """``(seq, send time in epoch seconds)`` from a :func:`stamp_id`; None if not one."""
    head, _, rest = task_id.partition(f"{prefix}-")
    if head or not rest:
        return None
    seq, _, ns = rest.partition("-")
    if not seq.isdigit() or not ns.isdigit():
        return None
    return int(seq), int(ns) / 1e9


def latencies_ms(rows: Iterable[tuple[str, datetime]], prefix: str,
                 warmup_until: float) -> tuple[list[float], list[float]]:
    """Sorted latencies in ms of the rows with ``prefix`` ids: (sent before
    ``warmup_until``, sent from then on). ``date_done`` is naive UTC, as stored."""
    warm: list[float] = []
    steady: list[float] = []
    for task_id, done in rows:
        parsed = parse_stamp(task_id, prefix)
        if parsed is None or done is None:
            continue
        sent = parsed[1]
        ms = (done.replace(tzinfo=UTC).timestamp() - sent) * 1000
        (warm if sent < warmup_until else steady).append(ms)
    return sorted(warm), sorted(steady)


def worst_second(rows: Iterable[tuple[float, float]]) -> float | None:
    """The highest p99 of any one second of sends, from ``(send time, latency ms)`` pairs:
    a p99 met on average can still hide a bad second (a stall, another process's burst)."""
    seconds: dict[int, list[float]] = {}
    for sent, ms in rows:
        seconds.setdefault(int(sent), []).append(ms)
    worst = [percentile(sorted(v), 99) for v in seconds.values() if len(v) >= 20]
    return round(max(worst), 1) if worst else None


def summary(sorted_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 and max of sorted latencies, rounded to 0.1 ms (None when empty)."""
    out: dict[str, float | None] = {f"p{p}_ms": round(percentile(list(sorted_ms), p), 1)
                                    if sorted_ms else None for p in PERCENTILES}
    out["max_ms"] = round(sorted_ms[-1], 1) if sorted_ms else None
    return out


# -- the publisher process -----------------------------------------------------------
def _template(task: str) -> tuple[dict[str, Any], dict[str, Any], tuple[Any, Any, Any]]:
    """Headers, properties and body of one task message as Celery's client builds them."""
    from celery import Celery

    message = Celery("bench-latency").amqp.as_task_v2("-", task, args=[], kwargs={})
    return dict(message.headers), dict(message.properties), message.body


#: Sends a batch of ``(seq, task id)`` that came due together.
Send = Callable[[list[tuple[int, str]]], Awaitable[None]]


def _frames(channel: int, queue: str, body: bytes, properties: dict[str, Any],
            headers: dict[str, Any], argsrepr: str, task_id: str) -> bytes:
    """One Celery task message as the AMQP frames of a ``basic.publish``, as bytes."""
    from aiormq.abc import ChannelFrame
    from pamqp.body import ContentBody
    from pamqp.commands import Basic
    from pamqp.header import ContentHeader

    props = Basic.Properties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2,
        priority=0, correlation_id=task_id, reply_to=properties.get("reply_to") or None,
        headers=dict(headers, id=task_id, root_id=task_id, argsrepr=argsrepr))
    return ChannelFrame.marshall(channel, [
        Basic.Publish(exchange="", routing_key=queue),
        ContentHeader(body_size=len(body), properties=props), ContentBody(body)]).payload


async def _amqp_sender(broker: str, queue: str, task: str, prefix: str,
                       args: list[list[Any]]) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """Publish prebuilt Celery messages over one aiormq connection, without confirms.

    Each argument list's message is marshalled to AMQP frames once, with a
    placeholder task id of the fixed width :func:`stamp_id` gives; a send copies
    those bytes with the real id (the send stamp) in the placeholder's three places
    (``id``, ``root_id``, ``correlation_id``) and queues them on the connection's
    writer, a whole batch in one write. A message then costs the publisher a few
    microseconds instead of the ~0.1 ms of building properties and frames anew:
    on a 2-core machine the publisher's CPU is taken from the worker it measures.
    """
    import aiormq
    from aiormq.abc import ChannelFrame

    headers, properties, (_, kwargs, embed) = _template(task)
    connection = await aiormq.connect(broker)
    channel = await connection.channel(publisher_confirms=False)
    placeholder = stamp_id(prefix, 0, 0)
    templates = [_frames(channel.number, queue, json.dumps([a, kwargs, embed]).encode(),
                         properties, headers, repr(tuple(a)), placeholder) for a in args]
    hole = placeholder.encode()

    async def send(batch: list[tuple[int, str]]) -> None:
        payload = b"".join(templates[seq % len(templates)].replace(hole, task_id.encode())
                           for seq, task_id in batch)
        connection.write_queue.put_nowait(ChannelFrame(payload=payload, should_close=False))

    async def close() -> None:
        # The writer drains its queue in order: wait until the last batch is on the socket,
        # or closing would drop what is still queued.
        flushed = asyncio.get_running_loop().create_future()
        connection.write_queue.put_nowait(
            ChannelFrame(payload=b"", should_close=False, drain_future=flushed))
        await flushed
        await connection.close()

    return send, close


async def _kombu_sender(broker: str, queue: str, task: str, prefix: str,
                        args: list[list[Any]]) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """Celery's ``send_task`` per message (synchronous: it blocks this process's loop)."""
    from celery import Celery

    client = Celery("bench-latency", broker=broker)
    client.conf.update(broker_connection_retry_on_startup=True)
    producer = client.producer_or_acquire().__enter__()

    async def send(batch: list[tuple[int, str]]) -> None:
        for seq, task_id in batch:
            client.send_task(task, args[seq % len(args)], queue=queue, task_id=task_id,
                             producer=producer)

    async def close() -> None:
        producer.release()

    return send, close


async def publish(broker: str, queue: str, task: str, args: list[list[Any]], rate: float,
                  seconds: float, prefix: str, publisher: str = "amqp") -> dict[str, Any]:
    """Send ``rate × seconds`` tasks on an open-loop schedule; returns what was sent."""
    make = _kombu_sender if publisher == "kombu" else _amqp_sender
    send, close = await make(broker, queue, task, prefix, args or [[]])
    total = max(1, round(rate * seconds))
    lags: list[float] = []
    first = last = 0.0
    started = time.monotonic()
    sent = 0
    while sent < total:
        batch = []
        for seq in range(sent, due(rate, time.monotonic() - started, total)):
            now_ns = time.time_ns()
            lags.append(time.monotonic() - started - seq / rate)
            batch.append((seq, stamp_id(prefix, seq, now_ns)))
            first = first or now_ns / 1e9
            last = now_ns / 1e9
        if batch:
            await send(batch)
            sent = batch[-1][0] + 1
        if sent < total:
            # Wake at most every TICK: what came due meanwhile goes out in one write, each
            # message stamped as it is built (the stamp, not the schedule, is what counts).
            await asyncio.sleep(max(TICK, started + sent / rate - time.monotonic()))
    await close()
    lags.sort()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"sent": sent, "first": first, "last": last,
            "rate": round((sent - 1) / (last - first), 1) if last > first else 0.0,
            "lag_p99_ms": round(percentile(lags, 99) * 1000, 2),
            "lag_max_ms": round(lags[-1] * 1000, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}


def publisher_command(broker: str, queue: str, task: str, args: list[list[Any]],
                      rate: float, seconds: float, prefix: str,
                      publisher: str = "amqp") -> list[str]:
    """The command line of a publisher process."""
    return [sys.executable, "-m", "bench.latency", "publish", "--broker", broker,
            "--queue", queue, "--task", task, "--args-json", json.dumps(args),
            "--rate", repr(rate), "--seconds", repr(seconds), "--prefix", prefix,
            "--publisher", publisher]


# -- one point, one curve ------------------------------------------------------------
@dataclass
class Point:
    """Latency at one publish rate."""

    fraction: float | None  # of the peak throughput (a curve), None for a fixed rate
    rate: float  # asked for
    sent_rate: float = 0.0  # what the publisher reached
    publisher_lag_p99_ms: float = 0.0  # how late it sent against its schedule
    publisher_cpu_ms_per_task: float = 0.0
    tasks: int = 0  # measured (after the warm-up)
    missing: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    worst_second_p99_ms: float | None = None  # the worst one-second slice of sends
    done_rate: float = 0.0  # results per second while it ran (below sent_rate: overloaded)
    warmup_s: float = 0.0
    warmup_p99_ms: float | None = None  # the tasks sent during the warm-up, left out above
    #: Cores (CPU s ÷ wall s) while publishing: the whole machine, then each watched
    #: process tree (worker, RabbitMQ, PostgreSQL), the publisher, and what is left
    #: ("other": the bench itself and other sessions on the machine).
    cores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def measure(sql: Any, broker: str, queue: str, task: str, args: list[list[Any]],
            rate: float, seconds: float, warmup: float, prefix: str,
            fraction: float | None = None, watch: dict[str, TreeSampler] | None = None,
            publisher: str = "amqp") -> Point:
    """Publish for ``warmup + seconds`` at ``rate`` from a publisher process, wait for
    every result, and summarise the latencies after the warm-up.

    ``sql(query, *params)`` reads the result table (rows of ``task_id, date_done``);
    ``watch`` names process trees whose cores are reported (worker, RabbitMQ, ...).
    """
    from .processes import MachineCpu

    point = Point(fraction, round(rate, 1), warmup_s=warmup)
    seconds = max(seconds, 10 / rate)  # at least ten tasks after the warm-up, for slow rows
    watch = watch or {}
    before = {name: sampler.cpu_seconds() for name, sampler in watch.items()}
    cpu, started = MachineCpu(), time.monotonic()
    completed = subprocess.run(
        publisher_command(broker, queue, task, args, rate, warmup + seconds, prefix, publisher),
        capture_output=True, text=True, timeout=120 + 2 * (warmup + seconds), check=False)
    wall = time.monotonic() - started
    busy, _ = cpu.since()
    if completed.returncode != 0:
        point.notes.append(f"publisher failed: {completed.stderr.strip()[-300:]}")
        return point
    sent = json.loads(completed.stdout)
    point.sent_rate = sent["rate"]
    point.publisher_lag_p99_ms = sent["lag_p99_ms"]
    point.publisher_cpu_ms_per_task = round(sent["cpu_s"] * 1000 / max(sent["sent"], 1), 3)
    used = {name: (sampler.cpu_seconds() - before[name]) / wall
            for name, sampler in watch.items()}
    used["publisher"] = sent["cpu_s"] / wall
    point.cores = {"machine": round(busy / wall, 2),
                   **{name: round(v, 2) for name, v in used.items()},
                   "other": round(max(0.0, busy / wall - sum(used.values())), 2)}
    if sent["lag_p99_ms"] > 50:
        point.notes.append(f"publisher ran late: p99 {sent['lag_p99_ms']} ms behind schedule")

    def rows() -> list[tuple[Any, ...]]:
        return list(sql("SELECT task_id, date_done FROM celery_taskmeta "
                        "WHERE task_id LIKE %s", prefix + "-%"))

    wait_until(lambda: len(rows()) >= sent["sent"], 30 + sent["sent"] / max(rate, 1), 0.2)
    found = rows()
    point.missing = sent["sent"] - len(found)
    warm, steady = latencies_ms(found, prefix, sent["first"] + warmup)
    point.tasks = len(steady)
    point.warmup_p99_ms = summary(warm)["p99_ms"]
    for key, value in summary(steady).items():
        setattr(point, key, value)
    stamped = [(stamp[1], (done.replace(tzinfo=UTC).timestamp() - stamp[1]) * 1000, done)
               for task_id, done in found
               if done is not None and (stamp := parse_stamp(task_id, prefix))
               and stamp[1] >= sent["first"] + warmup]
    point.worst_second_p99_ms = worst_second((s, ms) for s, ms, _ in stamped)
    done_at = sorted(done for _, _, done in stamped)
    if len(done_at) > 1 and done_at[-1] > done_at[0]:
        point.done_rate = round((len(done_at) - 1) / (done_at[-1] - done_at[0]).total_seconds(),
                                1)
    if point.missing:
        point.notes.append(f"{point.missing} tasks had no result")
    return point


def curve(sql: Any, broker: str, queue: str, task: str, args: list[list[Any]], peak: float,
          seconds: float, warmup: float, prefix: str,
          watch: dict[str, TreeSampler] | None = None, publisher: str = "amqp",
          fractions: Sequence[float] = CURVE_FRACTIONS) -> list[Point]:
    """:func:`measure` at each fraction of ``peak``, lowest first, on the same worker."""
    return [measure(sql, broker, queue, task, args, peak * f, seconds, warmup,
                    f"{prefix}{round(f * 100)}", f, watch, publisher)
            for f in sorted(fractions)]


# -- report --------------------------------------------------------------------------
def _cell(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _cores(cores: dict[str, float]) -> str:
    if not cores:
        return "–"
    parts = [cores.get(k) for k in ("worker", "publisher", "rabbitmq", "postgresql", "other")]
    return f"{_cell(cores.get('machine'), 2)} = " + " + ".join(_cell(v, 2) for v in parts)


def curve_markdown(results: list[dict[str, Any]]) -> str:
    """The latency table: each row's half-load point and curve points ("" when none)."""
    rows = [r for r in results if r.get("latency_curve") or r.get("latency_point")]
    if not rows:
        return ""
    lines = ["### Latency, point by point", "",
             "An open-loop publisher in its own process sends at a fraction of the row's "
             "throughput (queue pre-filled), each task stamped with its send time; latency = "
             "`date_done` - send stamp, leaving out the warm-up (its p99 in its own column). "
             "*Worst 1 s*: the highest p99 of any one second of sends. *Sent* and *done*: "
             "the rates the publisher and the worker reached (done below sent: overloaded). "
             "Cores (CPU s ÷ wall s) while publishing: the machine's busy cores = the worker "
             "+ the publisher + RabbitMQ + PostgreSQL + other (the bench, other sessions on "
             "the machine). *half*: the latency phase of the table above, on a fresh "
             "worker.", "",
             "| Workload | Worker | Load | Rate /s: asked, sent, done | p50 ms | p95 ms "
             "| p99 ms | Worst 1 s p99 | Warm-up p99 | Cores: machine = worker + publisher "
             "+ RabbitMQ + PostgreSQL + other |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    notes = []
    for r in rows:
        points = [("half", r["latency_point"])] if r.get("latency_point") else []
        points += [(f"{p['fraction'] * 100:.0f}%", p) for p in r.get("latency_curve", [])]
        for load, p in points:
            lines.append(
                f"| {r['workload']} | {r['config']} | {load} | {p['rate']:,.0f}, "
                f"{p['sent_rate']:,.0f}, {p.get('done_rate', 0):,.0f} | {_cell(p['p50_ms'])} "
                f"| {_cell(p['p95_ms'])} | {_cell(p['p99_ms'])} "
                f"| {_cell(p.get('worst_second_p99_ms'))} | {_cell(p['warmup_p99_ms'])} "
                f"| {_cores(p.get('cores', {}))} |")
            notes += [f"- {r['config']} / {r['workload']}, {load}: {n}" for n in p["notes"]]
    return "\n".join([*lines, "", *notes, ""]) + "\n"


def curve_chart(results: list[dict[str, Any]], path: Path) -> bool:
    """p50/p95/p99 against load, one panel per workload; False (no file) without curves."""
    rows = [r for r in results if r.get("latency_curve")]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5),
                             squeeze=False)
    styles = {50: ":", 95: "--", 99: "-"}
    for ax, workload in zip(axes[0], workloads, strict=True):
        for i, r in enumerate(x for x in rows if x["workload"] == workload):
            color = f"C{i}"
            points = [p for p in r["latency_curve"] if p["p99_ms"] is not None]
            loads = [p["fraction"] * 100 for p in points]
            for pct, style in styles.items():
                ax.plot(loads, [p[f"p{pct}_ms"] for p in points], style, marker="o",
                        color=color, label=f"{r['config']} p{pct}")
        ax.axhline(20, color="#999999", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("load, % of the pre-filled-queue throughput")
        ax.set_ylabel("latency, ms (log)")
        ax.set_title(f"{workload}: latency against load")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def as_dicts(points: list[Point]) -> list[dict[str, Any]]:
    """Points as JSON-ready dicts."""
    return [asdict(p) for p in points]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.latency publish ...``: the publisher process."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency")
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="open-loop publisher; prints what it sent as JSON")
    pub.add_argument("--broker", required=True)
    pub.add_argument("--queue", required=True)
    pub.add_argument("--task", required=True)
    pub.add_argument("--args-json", default="[]", help="argument lists, used in turn")
    pub.add_argument("--rate", type=float, required=True)
    pub.add_argument("--seconds", type=float, required=True)
    pub.add_argument("--prefix", required=True)
    pub.add_argument("--publisher", choices=PUBLISHERS, default="amqp")
    args = parser.parse_args(argv)
    sent = asyncio.run(publish(args.broker, args.queue, args.task, json.loads(args.args_json),
                               args.rate, args.seconds, args.prefix, args.publisher))
    print(json.dumps(sent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
