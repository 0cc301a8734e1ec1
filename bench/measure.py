"""Resource use of a worker's whole process tree, sampled in a background thread."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import psutil


class TreeSampler:
    """Samples the summed RSS and CPU time of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self._cpu_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        """Begin sampling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """One reading: RSS summed over the tree; CPU remembered per process."""
        rss = 0
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                # Exited children's time stays counted at its last reading.
                self._cpu_seen[proc.pid] = times.user + times.system
        self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        """CPU seconds used by the tree so far (as of the latest sample)."""
        self.sample()
        return sum(self._cpu_seen.values())


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll a callable until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def machine(dsn: str) -> dict[str, Any]:
    """What the figures were measured on (PostgreSQL's version and fsync read at ``dsn``)."""
    import celery
    import psycopg2

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    pg = fsync = "?"
    with contextlib.suppress(psycopg2.Error), psycopg2.connect(dsn) as conn, \
            conn.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]  # type: ignore[index]
        cur.execute("SHOW fsync")
        fsync = cur.fetchone()[0]  # type: ignore[index]
    return {
        "cpu": model, "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(), "celery": celery.__version__,
        "postgresql": pg, "postgresql_fsync": fsync, "kernel": platform.release(),
    }
