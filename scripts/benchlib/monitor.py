"""CPU time and resident memory of a FUSE daemon (its process and its descendants).

CPU is read exactly at phase boundaries (user + system from the kernel); RSS is
sampled by a background thread every ~50 ms, since a peak between two reads
would otherwise be missed. Children are included because a mount may run its
FUSE loop in a child process of the process we started.
"""

from __future__ import annotations

import contextlib
import threading

import psutil

SAMPLE_INTERVAL = 0.05


class DaemonMonitor:
    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self._peak = 0
        self.peak_ever = 0  # over the whole run
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _tree(self) -> list:
        try:
            return [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_now(self) -> int:
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _sample_loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            rss = self.rss_now()
            with self._lock:
                self._peak = max(self._peak, rss)
                self.peak_ever = max(self.peak_ever, rss)

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self.rss_now()

    def peak(self) -> int:
        rss = self.rss_now()  # the last moment too, in case the phase was shorter than a sample
        with self._lock:
            self._peak = max(self._peak, rss)
            return self._peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
