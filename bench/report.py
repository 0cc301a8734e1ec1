"""The benchmark's markdown table and chart, from its raw JSON."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any

from .peers import BACKENDS as PEERS


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio(ours: float, theirs: float, digits: int = 1) -> str:
    if not theirs:
        return "∞" if ours else "–"
    return f"{ours / theirs:.{digits}f}×"


def _with_spread(row: dict[str, Any], key: str, digits: int = 0) -> str:
    """A row's figure, and the min–max of its runs when it had several (``--repeat``)."""
    runs = row.get(f"{key}_runs", [])
    if len(runs) < 2:
        return _fmt(row[key], digits)
    return f"{_fmt(row[key], digits)} ({_fmt(min(runs), digits)}–{_fmt(max(runs), digits)})"


def _ratios(new: list[float], old: list[float]) -> dict[str, float] | None:
    """new ÷ old of the medians, and the lowest and highest ratio of any new run to any old one."""
    if not new or not old or min(old) <= 0:
        return None
    return {"ratio": round(median(new) / median(old), 3),
            "low": round(min(new) / max(old), 3), "high": round(max(new) / min(old), 3)}


def against(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each baseline row (``--baseline``) against its twin on this tree, new ÷ old.

    Throughput and CPU per task, from every run's figures: a low–high range that
    excludes 1 means every new run beat (or lost to) every old one.
    """
    rows = {(r["workload"], r["config"]): r for r in results}
    out = []
    for old in results:
        new = rows.get((old["workload"], old.get("twin_of", "")))
        if not old.get("baseline") or new is None:
            continue
        out.append({
            "workload": old["workload"], "config": new["config"], "baseline": old["config"],
            "runs": [len(new["throughput_runs"]), len(old["throughput_runs"])],
            "throughput": _ratios(new["throughput_runs"], old["throughput_runs"]),
            "cpu_ms_per_task": _ratios(new["cpu_ms_per_task_runs"],
                                       old["cpu_ms_per_task_runs"]),
        })
    return out


def _ratio_cell(ratios: dict[str, float] | None) -> str:
    if ratios is None:
        return "–"
    if ratios["low"] == ratios["high"]:
        return f"{ratios['ratio']:.2f}×"
    return f"{ratios['ratio']:.2f}× ({ratios['low']:.2f}–{ratios['high']:.2f}×)"


def _against_lines(data: dict[str, Any], workload: str) -> list[str]:
    """The "Against <ref>" table of one workload; none without a baseline."""
    base = data.get("baseline")
    pairs = [a for a in base["against"] if a["workload"] == workload] if base else []
    if not base or not pairs:
        return []
    lines = [f"#### Against {base['ref']} ({base['commit']})", "",
             "| Worker | Runs new + old | Tasks/s new ÷ old | CPU ms/task new ÷ old |",
             "|---|---:|---:|---:|"]
    lines += [f"| {a['config']} | {a['runs'][0]} + {a['runs'][1]} "
              f"| {_ratio_cell(a['throughput'])} | {_ratio_cell(a['cpu_ms_per_task'])} |"
              for a in pairs]
    return [*lines, ""]


def best_peer(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The asyncio peer's row with the highest throughput (None without a measured one)."""
    measured = [r for r in rows if r["kind"] in PEERS and not r.get("cannot") and r["throughput"]]
    return max(measured, key=lambda r: r["throughput"], default=None)


def _peer_lines(rows: list[dict[str, Any]], ours: dict[str, Any] | None) -> list[str]:
    """asyncworker against prefork and against the best asyncio peer, a line per row.

    The rows: asyncworker's first, and the one with its results in Redis (the peers'
    store) when there is one.
    """
    best = best_peer(rows)
    prefork = next((r for r in rows if r["config"].startswith("prefork")), None)
    if ours is None or best is None:
        return []
    lines = [""]
    for row in rows:
        if row is not ours and not (row["kind"] == "asyncworker"
                                    and row["config"].endswith(" redis")):
            continue
        parts = [f"{_ratio(row['throughput'], prefork['throughput'])} {prefork['config']}'s"
                 ] if prefork else []
        cpu = _ratio(row["cpu_ms_per_task"] or 0, best["cpu_ms_per_task"] or 0, 2)
        rss = _ratio(row["peak_rss_mb"], best["peak_rss_mb"], 2)
        parts.append(f"{_ratio(row['throughput'], best['throughput'], 2)} the best asyncio "
                     f"peer's ({best['config']}), at {cpu} its CPU per task and {rss} its "
                     "peak RSS")
        lines.append(f"- **{row['config']}** tasks/s: " + "; ".join(parts) + ".")
    return lines


def _redis_broker_lines(rows: list[dict[str, Any]]) -> list[str]:
    """asyncworker on the Redis broker against Celery prefork on that same Redis, and
    against itself on RabbitMQ."""
    on_redis = [r for r in rows if r["config"].endswith(" redis-broker") and not r.get("cannot")]
    prefork = [r for r in on_redis if r["config"].startswith("prefork") and r["throughput"]]
    lines = []
    for row in on_redis:
        if row["kind"] != "asyncworker":
            continue
        parts = [f"{_ratio(row['throughput'], p['throughput'])} {p['config']}'s"
                 for p in prefork]
        amqp = next((r for r in rows if r["config"] == row["config"].removesuffix(
            " redis-broker") and r["throughput"]), None)
        if amqp:
            parts.append(f"{_ratio(row['throughput'], amqp['throughput'], 2)} its own on "
                         f"RabbitMQ ({amqp['config']})")
        if parts:
            lines.append(f"- **{row['config']}** tasks/s: " + "; ".join(parts) + ".")
    return ["", *lines] if lines else []


HEADER = ("| Worker | Tasks/s | Little's-law ideal | Speed-up | vs best peer | p50 ms | p95 ms "
          "| p99 ms | Peak RSS MB | Memory | CPU ms/task | Errors |")


def _cannot_row(r: dict[str, Any]) -> str:
    """A row for a worker that cannot run the workload: the reason, and no figures."""
    return f"| {r['config']} | – cannot: {r['cannot']} |" + " – |" * (HEADER.count("|") - 3)


def markdown(data: dict[str, Any]) -> str:
    """One table per workload, asyncworker first, with ratios against it."""
    m = data["machine"]
    lines = [
        f"Measured {data['when']} with `{data['command']}` ({data['duration_s']:.0f} s).",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB; Python {m['python']}, "
        f"Celery {m['celery']}, PostgreSQL {m['postgresql']} (fsync={m['postgresql_fsync']}).",
        f"Model API latency: {data['gpt_latency']} s (lognormal median:sigma).",
        "",
        "Throughput is tasks/s with the queue pre-filled, between the 10th and 90th percentile "
        "of result rows' `date_done` (steady state; the time budget ends a run early); "
        "latency is publish → `date_done` at half that throughput. "
        "**Speed-up** = asyncworker's throughput ÷ this row's; "
        "**memory** = this row's peak RSS ÷ asyncworker's; "
        "**vs best peer** = this row's throughput ÷ the best asyncio peer's.",
        "",
    ]
    if any(r["kind"] in PEERS for r in data["results"]):
        lines += [
            "The asyncio peers run the same tasks at asyncworker's concurrency, on the same "
            "RabbitMQ, one worker process each (taskiq's is a supervisor with one worker "
            "child; RSS and CPU count both), with prefetch 4 × concurrency. aio-celery "
            "consumes the bench's Celery messages; taskiq has its own protocol and queue, "
            "filled by taskiq's own client (`kiq`). Results: "
            + "; ".join(f"{kind}: {store}" for kind, store in PEERS.items())
            + ". Completion is aio-celery's `date_done` in its result; taskiq keeps no "
            "completion time, so each task returns its finish time, stored with the result. "
            "`asyncworker … redis` rows store results in that same Redis (asyncworker's Redis "
            "backend): against the peers, store for store.",
            "",
        ]
    if any(r["config"].endswith(" redis-broker") for r in data["results"]):
        lines += [
            "`… redis-broker` rows take their tasks from Redis (kombu's list format, sent by "
            "the same Celery client) instead of RabbitMQ, results still in PostgreSQL; their "
            "latency phase is published by the bench process through that client.",
            "",
        ]
    if any(len(r.get("throughput_runs", [])) > 1 for r in data["results"]):
        lines += ["Rows run more than once (`--repeat`) show the median, with the min–max "
                  "in brackets (p99: the worst run is the max).", ""]
    if base := data.get("baseline"):
        lines += [
            f"`asyncworker@{base['commit']}` rows run the same worker with asyncworker imported "
            f"from commit {base['commit']} (`--baseline {base['ref']}`) and the tasks from this "
            "tree. **Against** gives this tree ÷ that commit for each pair: the ratio of the "
            "medians, in brackets the lowest and highest ratio of any new run to any old run "
            "(a range that excludes 1.00× means every new run beat, or lost to, every old run: "
            "by chance alone 1 time in 10 with 3 runs a side, 1 in 126 with 5).",
            "",
        ]
    for workload in dict.fromkeys(r["workload"] for r in data["results"]):
        rows = [r for r in data["results"] if r["workload"] == workload]
        ours = next((r for r in rows if r["kind"] == "asyncworker" and not r.get("baseline")),
                    None)
        lines += [
            f"### {workload}",
            "",
            HEADER,
            "|---|" + "---:|" * (HEADER.count("|") - 2),
        ]
        best = best_peer(rows)
        for r in rows:
            if r.get("cannot"):
                lines.append(_cannot_row(r))
                continue
            vs_peer = _ratio(r["throughput"], best["throughput"], 2) if best else "–"
            speedup = "1.0×" if r is ours or ours is None else _ratio(ours["throughput"],
                                                                      r["throughput"])
            memory = "1.0×" if r is ours or ours is None else _ratio(r["peak_rss_mb"],
                                                                     ours["peak_rss_mb"])
            name = f"**{r['config']}**" if r is ours else r["config"]
            lines.append(
                f"| {name} | {_with_spread(r, 'throughput')} | {_fmt(r['littles_law_ideal'])} "
                f"| {speedup} | {vs_peer} | {_fmt(r['latency_p50_ms'])} "
                f"| {_fmt(r['latency_p95_ms'])} | {_with_spread(r, 'latency_p99_ms')} "
                f"| {_fmt(r['peak_rss_mb'])} | {memory} "
                f"| {_with_spread(r, 'cpu_ms_per_task', 2)} | {r['errors']} |")
        lines += _peer_lines(rows, ours)
        lines += _redis_broker_lines(rows)
        notes = [f"{r['config']}: {n}" for r in rows for n in r["notes"]]
        if notes:
            lines += ["", *[f"- {n}" for n in notes]]
        lines.append("")
        lines += _against_lines(data, workload)
    f = data["floors"]
    lines += [
        "### Floors (one asyncio process doing only that)",
        "",
        f"- aio-pika consume + ack: {_fmt(f.get('amqp_consume_ack_per_s'))} messages/s",
        *([f"- the same, on the Celery client's noop messages (~20 headers): "
           f"{_fmt(f['amqp_consume_ack_same_messages_per_s'])} messages/s"]
          if f.get("amqp_consume_ack_same_messages_per_s") else []),
        f"- asyncpg inserts, one per statement: {_fmt(f.get('pg_single_inserts_per_s'))} rows/s",
        f"- asyncpg inserts, executemany × 100: {_fmt(f.get('pg_batched_inserts_per_s'))} rows/s",
    ]
    if "s3_requests_per_s" in f:
        lines.append(f"- S3 test server ({f.get('s3_server', 'moto')}), get + put: "
                     f"{_fmt(f['s3_requests_per_s'])} "
                     "requests/s (two per vision task)")
    lines += floor_share_lines(data)
    return "\n".join(lines) + "\n"


def floor_share_lines(data: dict[str, Any]) -> list[str]:
    """noop throughput as a share of the raw AMQP floors (issue 14's first target: 80%)."""
    f = data["floors"]
    rows = [r for r in data["results"] if r["workload"] == "noop" and r["kind"] == "asyncworker"
            and not r.get("baseline") and r["throughput"]]
    floors = [(key, label) for key, label in (
        ("amqp_consume_ack_per_s", "aio-pika consume + ack"),
        ("amqp_consume_ack_same_messages_per_s", "the same, on the worker's Celery messages"),
    ) if f.get(key)]
    if not rows or not floors:
        return []
    lines = ["", "#### noop against the AMQP floor", "",
             "| Worker | Tasks/s | " + " | ".join(f"% of {label}" for _, label in floors) + " |",
             "|---|---:|" + "---:|" * len(floors)]
    lines += [f"| {r['config']} | {_fmt(r['throughput'])} | "
              + " | ".join(f"{100 * r['throughput'] / f[key]:.0f}%" for key, _ in floors) + " |"
              for r in rows]
    return lines


def chart(data: dict[str, Any], path: Path) -> None:
    """Throughput and peak RSS per configuration, one column of panels per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in data["results"]))
    fig, axes = plt.subplots(2, len(workloads), figsize=(5 * len(workloads), 7), squeeze=False)
    for col, workload in enumerate(workloads):
        rows = [r for r in data["results"] if r["workload"] == workload]
        labels = [r["config"] for r in rows]
        colors = ["#e39c5a" if r["kind"] in PEERS else "#b0b0b0" if r["kind"] != "asyncworker"
                  else "#8fc1e3" if r.get("baseline") else "#2a7ab0" for r in rows]
        for row, (key, title) in enumerate((("throughput", "tasks/s"),
                                            ("peak_rss_mb", "peak RSS, MB"))):
            ax = axes[row][col]
            values = [r[key] for r in rows]
            ax.barh(labels, values, color=colors)
            ax.invert_yaxis()
            if key == "throughput" and min(values, default=0) > 0:
                ax.set_xscale("log")  # the pools differ by orders of magnitude
            ax.set_title(f"{workload}: {title}")
            for y, value in enumerate(values):
                ax.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
            ax.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
