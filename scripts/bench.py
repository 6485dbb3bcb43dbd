#!/usr/bin/env python3
"""realmfs benchmark: the same workloads on a plain directory, realmfs, gocryptfs and securefs.

    python3 scripts/bench.py            # full: 512 MiB files, 100k rows, 3 repetitions
    python3 scripts/bench.py --quick    # everyday: 64 MiB, 10k rows, 3 repetitions, about 1 min
    python3 scripts/bench.py --json out.json --targets plain,realmfs --workloads files,sqlite

Prints the medians, their ratios to plain (lower is better; plain measured in
the same run), the FUSE daemons' CPU seconds per GB and peak RSS, and the
issue's targets as PASS/FAIL. Workloads: see scripts/benchlib/workloads.py and
docs/performance.md.

Invariants:
* all targets live under one temporary directory in /var/tmp (same filesystem
  for plain and every backing directory), removed at the end;
* repetitions alternate the target order (A B C D, then D C B A, ...) so slow
  drift of a shared machine falls on every target alike;
* cold reads evict only the files involved; the machine-wide page cache is never
  dropped (before each run, syncfs writes back this filesystem's dirty data: it
  evicts nothing);
* every mount is undone and every daemon this run started is reaped, also on
  Ctrl-C, SIGTERM or an error (finally); a target that is missing or fails to
  mount becomes a skipped column, never a failed run.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # realmfs, engine

from benchlib import report, targets as targetlib, workloads as wl  # noqa: E402
from benchlib.monitor import DaemonMonitor  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (64 MiB, 10k rows): about a minute")
    p.add_argument("--reps", type=int, help="repetitions per workload (default 3)")
    p.add_argument("--targets", default=",".join(targetlib.DEFAULT),
                   help=f"comma list from {sorted(targetlib.ALL)} (default %(default)s; "
                        "'pyfuse' is a pass-through without crypto on realmfs's binding and FUSE options: "
                        "the floor of realmfs's request path)")
    p.add_argument("--workloads", default=",".join(wl.ALL), help="comma list (default %(default)s)")
    p.add_argument("--base", default="/var/tmp", help="where the temporary directory goes")
    p.add_argument("--json", metavar="FILE", help="also write every sample and median here")
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for name in args.targets:
        if name not in targetlib.ALL:
            p.error(f"unknown target {name}")
    for name in args.workloads:
        if name not in wl.ALL:
            p.error(f"unknown workload {name}")
    if "plain" not in args.targets:
        args.targets.insert(0, "plain")  # every ratio needs it
    args.reps = args.reps or 3  # a median of 3 survives one disturbed repetition
    return args


_libc = ctypes.CDLL(None, use_errno=True)


def settle(path: str) -> None:
    """Write back dirty data of the filesystem holding ``path`` (syncfs: this filesystem
    only, nothing is evicted), so that the writeback of the previous run (a 512 MiB
    file just deleted, a database just closed) does not land in the next one's timing."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _libc.syncfs(fd)
    finally:
        os.close(fd)


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds into the finally that unmounts


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _worker(conn, workload: str, ctx) -> None:
    """In the forked child: run one workload, send back what it measured."""
    # Ctrl-C reaches the whole process group: the parent alone handles it and ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    monitor = DaemonMonitor(ctx.target.daemon_pid) if ctx.target.daemon_pid else None
    ctx.monitor = monitor
    try:
        measured = wl.ALL[workload](ctx)
        conn.send((measured, ctx.daemon, ctx.notes, None))
    except Exception as error:
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
        conn.send(([], {}, {}, f"{type(error).__name__}: {error}"))
    finally:
        if monitor:
            monitor.close()


def run_isolated(workload: str, ctx):
    """One workload run in a forked child: a SIGBUS from a bad mmap page (or any crash)
    kills only the child, and the parent still unmounts; each run starts from the same
    interpreter state. Returns (measured, daemon phases, rss notes, error or None)."""
    mp = multiprocessing.get_context("fork")
    receive, send = mp.Pipe(duplex=False)
    child = mp.Process(target=_worker, args=(send, workload, ctx), daemon=True)
    child.start()
    send.close()
    try:
        try:
            outcome = receive.recv()
        except EOFError:  # died without a word: a signal
            child.join()
            code = child.exitcode
            why = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
            return [], {}, {}, f"worker {why}"
        child.join()
        return outcome
    except BaseException:
        if child.is_alive():
            child.terminate()  # our own child, by pid
            child.join()
        raise
    finally:
        receive.close()


def start_targets(names, base, live: list) -> dict:
    """Start each target, appending it to ``live`` (the caller's, so that an interrupt
    in the middle still stops what was started); return {skipped name: why}."""
    skipped = {}
    for name in names:
        target = targetlib.ALL[name](base)
        why = target.unavailable()
        if why:
            skipped[name] = why
            continue
        live.append(target)  # before start(): a half-started target still gets stop()
        try:
            target.start()
        except Exception as error:
            skipped[name] = f"failed to start: {error}"
            target.stop()
            live.remove(target)
    return skipped


def run(args) -> dict:
    sizes = wl.Sizes.quick() if args.quick else wl.Sizes()
    base = tempfile.mkdtemp(prefix=f"realmfs-bench-{os.getpid()}-", dir=args.base)
    samples: dict = {}   # metric -> target -> [seconds]
    amounts: dict = {}   # metric -> (amount, unit)
    daemon: dict = {}    # target -> phase -> [{cpu_s, bytes, peak_rss}]
    notes: dict = {}     # target -> [{write_early, write_end}]
    errors: dict = {}    # (workload, target) -> message
    live, monitors, skipped, peak_overall = [], {}, {}, {}
    began = time.monotonic()
    try:
        skipped = start_targets(args.targets, base, live)
        for name, why in skipped.items():
            log(f"skipping {name}: {why}")
        monitors = {t.name: DaemonMonitor(t.daemon_pid) for t in live if t.daemon_pid}
        for workload in args.workloads:
            for rep in range(args.reps):
                order = live if rep % 2 == 0 else live[::-1]
                for target in order:
                    work = os.path.join(target.dir, f"{workload}-{rep}")
                    os.mkdir(work)
                    settle(base)
                    try:
                        measured, phases, rss_notes, error = run_isolated(
                            workload, wl.Ctx(work, target, sizes, None))
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                        if os.path.exists(work):  # e.g. files the mount hides but BACKING keeps
                            log(f"  WARNING: {work} could not be removed: {os.listdir(work)}")
                    if error:
                        errors[(workload, target.name)] = error
                        log(f"  {workload} on {target.name} failed: {error}")
                    for metric, seconds, amount, unit in measured:
                        samples.setdefault(metric, {}).setdefault(target.name, []).append(seconds)
                        amounts[metric] = (amount, unit)
                    for phase, stats in phases.items():
                        daemon.setdefault(target.name, {}).setdefault(phase, []).append(stats)
                    if rss_notes:
                        notes.setdefault(target.name, []).append(rss_notes)
                    log(f"[{workload} {rep + 1}/{args.reps}] {target.name:9s} "
                        + " ".join(f"{m}={s:.3f}s" for m, s, _, _ in measured))
        peak_overall = {name: m.peak_ever for name, m in monitors.items()}
    finally:
        for monitor in monitors.values():
            monitor.close()
        for target in reversed(live):
            try:
                target.stop()
            except Exception as error:  # keep stopping the others
                log(f"stopping {target.name}: {error}")
        leftover = [m for m in targetlib.fuse_mountpoints() if m.startswith(base)]
        if leftover:
            log(f"WARNING: still mounted: {leftover}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "host": platform.node(), "quick": args.quick, "reps": args.reps,
                 "sizes": dataclasses.asdict(sizes),
                 "targets": [t.name for t in live], "skipped": skipped,
                 "seconds": round(time.monotonic() - began, 1)},
        "samples": samples, "amounts": amounts, "daemon": daemon, "rss_notes": notes,
        "peak_rss_overall": peak_overall,
        "errors": {f"{w}/{t}": msg for (w, t), msg in errors.items()},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        result = run(args)
    except KeyboardInterrupt:
        log("interrupted; mounts undone, temporary files removed")
        return 130
    print(report.render(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report.with_medians(result), out, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
