"""Resource use of a worker's whole process tree, sampled in a background thread."""

from __future__ import annotations

import contextlib
import threading
import time

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
