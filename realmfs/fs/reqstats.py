"""Per-request timing histogram of the FUSE daemon, for profiling; off unless asked for.

Set ``REALMFS_REQUEST_STATS=/path/stats.json`` in the environment of the daemon
(``realmfs mount`` passes its environment on). The variable is read once, when the
mount starts: without it ``wrap`` returns the operations object itself, so the
request path carries no cost at all. With it every request is timed (wall time
inside realmfs, from fusepy's call to the reply: libfuse's own time is not in it)
into power-of-two microsecond buckets per operation.

The histogram is written (JSON, replacing the file) when the daemon gets SIGUSR1 --
and then starts afresh, so a harness can bracket one phase of a workload -- and at
unmount. ``python3 -m realmfs.fs.reqstats FILE`` prints it as a table.

Invariants: nothing here changes what a request does or returns; the file is
written whole (a temporary name, then rename), never half.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

ENV = "REALMFS_REQUEST_STATS"


class _Timed:
    """The operations object with every request timed; everything else delegated."""

    def __init__(self, ops, path: str):
        self._ops = ops
        self._path = path
        self._stats: dict[str, list] = {}    # op -> [count, total ns, {bucket: count}, bytes]
        self._dump_lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._ops, name)

    def __call__(self, op, *args):
        began = time.perf_counter_ns()
        try:
            return self._ops(op, *args)
        finally:
            elapsed = time.perf_counter_ns() - began
            entry = self._stats.get(op)
            if entry is None:
                entry = self._stats[op] = [0, 0, {}, 0]
            entry[0] += 1
            if op == "write":
                entry[3] += len(args[1])
            elif op == "read":
                entry[3] += args[1]     # bytes asked for
            entry[1] += elapsed
            bucket = (elapsed // 1000).bit_length()     # 0: < 1 us, n: [2^(n-1), 2^n) us
            entry[2][bucket] = entry[2].get(bucket, 0) + 1
            if op == "destroy":
                self.dump()

    def dump(self) -> None:
        """Write the histogram so far and start a new one."""
        with self._dump_lock:
            stats, self._stats = self._stats, {}
            out = {op: {"count": count, "total_us": total / 1000, "bytes": size,
                        "buckets_us": {str(1 << b >> 1): n for b, n in sorted(buckets.items())}}
                   for op, (count, total, buckets, size) in sorted(stats.items())}
            temporary = f"{self._path}.tmp"
            with open(temporary, "w") as file:
                json.dump(out, file, indent=1)
            os.replace(temporary, self._path)


def wrap(ops, environ=os.environ):
    """``ops`` timed per request if REALMFS_REQUEST_STATS names a file, else ``ops`` itself.
    Call from the main thread (it installs the SIGUSR1 handler)."""
    path = environ.get(ENV)
    if not path:
        return ops
    timed = _Timed(ops, os.path.abspath(path))
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: timed.dump())
    return timed


def render(stats: dict) -> str:
    """A table: per operation its count, mean and share of the time, and the buckets."""
    total = sum(s["total_us"] for s in stats.values()) or 1
    lines = [f"{'op':10s} {'count':>8s} {'mean us':>9s} {'share':>6s} {'KiB/req':>7s}  "
             "buckets (us lower bound: count)"]
    for op, s in sorted(stats.items(), key=lambda item: -item[1]["total_us"]):
        buckets = " ".join(f"{b}:{n}" for b, n in s["buckets_us"].items())
        size = f"{s['bytes'] / s['count'] / 1024:7.1f}" if s.get("bytes") else " " * 7
        lines.append(f"{op:10s} {s['count']:8d} {s['total_us'] / s['count']:9.1f} "
                     f"{s['total_us'] / total:6.1%} {size}  {buckets}")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as source:
        print(render(json.load(source)))
