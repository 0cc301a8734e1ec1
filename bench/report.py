"""The benchmark's markdown table and chart, from its raw JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio(ours: float, theirs: float) -> str:
    if not theirs:
        return "∞" if ours else "–"
    return f"{ours / theirs:.1f}×"


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
        "**memory** = this row's peak RSS ÷ asyncworker's.",
        "",
    ]
    for workload in dict.fromkeys(r["workload"] for r in data["results"]):
        rows = [r for r in data["results"] if r["workload"] == workload]
        ours = next((r for r in rows if r["kind"] == "asyncworker"), None)
        lines += [
            f"### {workload}",
            "",
            "| Worker | Tasks/s | Little's-law ideal | Speed-up | p50 ms | p95 ms | p99 ms "
            "| Peak RSS MB | Memory | CPU ms/task | Errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            speedup = "1.0×" if r is ours or ours is None else _ratio(ours["throughput"],
                                                                      r["throughput"])
            memory = "1.0×" if r is ours or ours is None else _ratio(r["peak_rss_mb"],
                                                                     ours["peak_rss_mb"])
            name = f"**{r['config']}**" if r is ours else r["config"]
            lines.append(
                f"| {name} | {_fmt(r['throughput'])} | {_fmt(r['littles_law_ideal'])} "
                f"| {speedup} | {_fmt(r['latency_p50_ms'])} | {_fmt(r['latency_p95_ms'])} "
                f"| {_fmt(r['latency_p99_ms'])} | {_fmt(r['peak_rss_mb'])} | {memory} "
                f"| {_fmt(r['cpu_ms_per_task'], 2)} | {r['errors']} |")
        notes = [f"{r['config']}: {n}" for r in rows for n in r["notes"]]
        if notes:
            lines += ["", *[f"- {n}" for n in notes]]
        lines.append("")
    f = data["floors"]
    lines += [
        "### Floors (one asyncio process doing only that)",
        "",
        f"- aio-pika consume + ack: {_fmt(f.get('amqp_consume_ack_per_s'))} messages/s",
        f"- asyncpg inserts, one per statement: {_fmt(f.get('pg_single_inserts_per_s'))} rows/s",
        f"- asyncpg inserts, executemany × 100: {_fmt(f.get('pg_batched_inserts_per_s'))} rows/s",
    ]
    if "s3_requests_per_s" in f:
        lines.append(f"- S3 test server (moto), get + put: {_fmt(f['s3_requests_per_s'])} "
                     "requests/s (two per vision task)")
    return "\n".join(lines) + "\n"


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
        colors = ["#2a7ab0" if r["kind"] == "asyncworker" else "#b0b0b0" for r in rows]
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
