#!/usr/bin/env python3
"""Where the realmfs daemon spends a workload's timed phase: py-spy and per-request times.

    python3 scripts/bench_profile.py --quick --workloads mmap,sqlite
    python3 scripts/bench_profile.py --workloads mmap --rate 1000 --keep /tmp/prof

Runs bench.py's workloads (scripts/benchlib/workloads.py) on one realmfs mount,
and over each timed phase (``Ctx.phase``: the same span bench.py times) records
the daemon with ``py-spy record -f raw`` and its per-request histogram
(realmfs/fs/reqstats.py, switched on through REALMFS_REQUEST_STATS). Prints, per
phase, the share of samples under the functions that matter (inclusive) and the
top functions by own samples, then the request table. Profiling slows the daemon
(py-spy pauses it per sample): read shares from here, times from bench.py.

Invariants: the mount and every child are undone at the end (the bench's own
target code); py-spy is our child, stopped by pid.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench  # noqa: E402
from benchlib import targets as targetlib, workloads as wl  # noqa: E402
from realmfs.fs import reqstats  # noqa: E402

PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")
# Inclusive shares worth a line of their own (a frame's function name, as py-spy prints it).
WATCH = ["read", "write", "fsync", "read_group", "slot1_ivs", "decrypt_in_place", "preadv",
         "write_group", "_find_torn", "seal_pages", "encrypt_view", "_write_in_order", "pwrite",
         "_merged_page", "block", "_grow_body", "_set_size", "_write_header", "_prefetch",
         "_wrapper", "__call__", "getattr"]


IDLE = ("FUSE.__init__ ", "Thread._wait_for_tstate_lock ")


class ProfilingCtx(wl.Ctx):
    """A workload context whose timed phases are profiled (py-spy + request histogram)."""

    def __init__(self, *args, out: str, rate: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.out, self.rate = out, rate

    @contextlib.contextmanager
    def phase(self, name: str, nbytes: int = 0):
        pid = self.target.daemon_pid
        raw = os.path.join(self.out, f"{name}.raw")
        spy = None if not self.rate else subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "-r", str(self.rate), "-f", "raw",
                                "-o", raw], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _dump_requests(pid, self.target.dir)                 # a fresh request histogram for this phase
        time.sleep(1.0)                     # py-spy attaches
        try:
            yield
        finally:
            shutil.copy(_dump_requests(pid, self.target.dir), os.path.join(self.out, f"{name}.requests.json"))
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # our child: py-spy writes its file on SIGINT
                spy.wait(30)


def _dump_requests(pid: int, mountpoint: str) -> str:
    """Have the daemon write its request histogram (and start a new one); its path."""
    path = os.environ[reqstats.ENV]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.kill(pid, signal.SIGUSR1)    # handled by the daemon's main thread, within ~0.5 s
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        os.stat(mountpoint)     # a request: the pass-through's main thread runs Python only then
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon wrote no request histogram (REALMFS_REQUEST_STATS not seen?)")
        time.sleep(0.01)
    return path


def _function(frame: str) -> str:
    """'EncryptedFile.write (realmfs/storage/pagefile.py:123)' -> 'EncryptedFile.write (realmfs/storage/pagefile.py)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0] or where.rstrip(')')})"


def summarize(raw_path: str, top: int = 18) -> str:
    inclusive, own, own_line, total = collections.Counter(), collections.Counter(), collections.Counter(), 0
    with open(raw_path) as raw:
        for line in raw:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count)
            frames = stack.split(";")
            total += count
            for name in {f.split(" (")[0].rpartition(".")[2] for f in frames}:
                inclusive[name] += count
            own[_function(frames[-1])] += count
            own_line[frames[-1]] += count
    # Waiting is not work: the FUSE thread blocked in libfuse (its leaf is FUSE.__init__,
    # which calls into C) and the main thread in join.
    idle = sum(c for n, c in own.items() if n.startswith(IDLE))
    busy = total - idle or 1
    lines = [f"{total} samples, {busy} busy ({busy / total:.0%}); shares of busy samples", "inclusive:"]
    lines += [f"  {inclusive[n] / busy:6.1%}  {n}" for n in WATCH if inclusive[n]]
    lines.append("own, by function (C calls count as their caller's own time):")
    lines += [f"  {c / busy:6.1%}  {n}" for n, c in own.most_common(top) if not n.startswith(IDLE)]
    lines.append("own, by line:")
    lines += [f"  {c / busy:6.1%}  {n}" for n, c in own_line.most_common(top) if not n.startswith(IDLE)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workloads", default="mmap,sqlite")
    p.add_argument("--target", default="realmfs", choices=["realmfs", "pyfuse"],
                   help="pyfuse: the crypto-free floor (request histogram; py-spy works too)")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second; 0: no py-spy "
                   "(clean request times: py-spy pauses the daemon per sample)")
    p.add_argument("--keep", help="directory for the raw profiles and histograms (default: a temporary one)")
    p.add_argument("--base", default="/var/tmp")
    args = p.parse_args(argv)
    sizes = wl.Sizes.quick() if args.quick else wl.Sizes()
    out = args.keep or tempfile.mkdtemp(prefix="realmfs-profile-")
    os.makedirs(out, exist_ok=True)
    base = tempfile.mkdtemp(prefix="realmfs-profile-", dir=args.base)
    os.environ[reqstats.ENV] = os.path.join(base, "requests.json")   # the daemon inherits it
    target = targetlib.ALL[args.target](base)
    try:
        target.start()
        for workload in args.workloads.split(","):
            work = os.path.join(target.dir, workload)
            os.mkdir(work)
            bench.settle(base)
            measured, _, _, error = bench.run_isolated(
                workload, ProfilingCtx(work, target, sizes, None, out=out, rate=args.rate))
            shutil.rmtree(work, ignore_errors=True)
            if error:
                print(f"{workload}: {error}")
            for metric, seconds, _, _ in measured:
                print(f"== {metric}: {seconds:.3f} s (profiled)")
        for name in sorted(os.listdir(out)):
            path = os.path.join(out, name)
            if name.endswith(".raw"):
                print(f"\n== {name[:-4]}: py-spy\n{summarize(path)}")
            elif name.endswith(".requests.json"):
                with open(path) as source:
                    print(f"\n== {name[:-14]}: requests\n{reqstats.render(json.load(source))}")
    finally:
        target.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nraw profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
