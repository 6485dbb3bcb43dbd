"""Tables of a bench run: medians, ratios to plain, FUSE daemon cost, and the issue's targets.

Ratios are time(target) / time(plain) from the same run: lower is better, 1.00x
is plain speed. A missing cell is "-" (target skipped or metric not measured),
a failed one "error".
"""

from __future__ import annotations

import statistics

from .workloads import METRICS

CANDIDATE = "realmfs"
PEERS = ("gocryptfs", "securefs")
FLOOR = "pyfuse"      # the crypto-free pass-through with realmfs's FUSE options


def _median(values):
    return statistics.median(values) if values else None


def medians(result) -> dict:
    return {metric: {t: _median(v) for t, v in per_target.items()}
            for metric, per_target in result["samples"].items()}


def _metric_order(result) -> list:
    known = [m for m in METRICS if m in result["samples"]]
    return known + sorted(m for m in result["samples"] if m not in METRICS)


def _table(header: list, rows: list) -> str:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header] + rows):
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                 for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(seconds, amount, unit) -> str:
    if seconds is None:
        return "-"
    if unit == "B":
        return f"{seconds:.3f}s {amount / seconds / 1e6:5.0f}MB/s"
    if unit == "op":
        return f"{seconds:.3f}s {seconds / amount * 1e6:6.1f}us/op"
    return f"{seconds:.3f}s"


def _errored(result, metric, target) -> bool:
    workload = {"seq": "files", "ran": "files", "mma": "mmap", "sql": "sqlite", "lmd": "lmdb",
                "eng": "engine"}.get(metric[:3], "")
    return f"{workload}/{target}" in result["errors"]


def daemon_rows(result) -> list:
    """(label, {target: value}) for the FUSE daemons."""
    rows = []

    def per_gb(phase):
        out = {}
        for target, phases in result["daemon"].items():
            runs = [r["cpu_s"] / (r["bytes"] / 1e9) for r in phases.get(phase, []) if r["bytes"]]
            if runs:
                out[target] = f"{statistics.median(runs):.2f}"
        return out

    rows.append(("CPU s per GB written (seq write+fsync)", per_gb("write")))
    rows.append(("CPU s per GB read (seq read cold)", per_gb("read_cold")))
    phases = []  # in the order the run met them
    for per_target in result["daemon"].values():
        phases += [ph for ph in per_target if ph not in phases and ph not in ("write", "read_cold")]
    for phase in phases:
        cpu = {t: f"{_median([r['cpu_s'] for r in p[phase]]):.2f}"
               for t, p in result["daemon"].items() if p.get(phase)}
        if cpu:
            rows.append((f"CPU s during {phase}", cpu))
    peaks = {t: f"{max(r['peak_rss'] for ph in ('write', 'read_cold') for r in p.get(ph, [])) / 1e6:.0f}"
             for t, p in result["daemon"].items() if p.get("write")}
    rows.append(("peak RSS MB, seq write + cold read", peaks))
    growth = {t: f"{_median([n['write_end'] - n['write_early'] for n in notes]) / 1e6:+.1f}"
              for t, notes in result["rss_notes"].items()
              if all("write_early" in n and "write_end" in n for n in notes)}
    rows.append(("RSS growth MB, 1/8 -> end of seq write", growth))
    rows.append(("peak RSS MB, whole run",
                 {t: f"{v / 1e6:.0f}" for t, v in result["peak_rss_overall"].items()}))
    return rows


def checks(result, candidate: str = CANDIDATE) -> list:
    """The issue's targets for ``candidate`` (realmfs; the pyfuse floor): (what, measured, verdict)."""
    med = medians(result)
    out = []

    def get(metric, target):
        return med.get(metric, {}).get(target)

    def ratio(metric, target=candidate):
        t, p = get(metric, target), get(metric, "plain")
        return t / p if t is not None and p else None

    def check(what, ok, measured, own=None):
        """``own``: the candidate's figure alone (``measured`` may add the peers')."""
        out.append((what, measured, "n/a" if ok is None else ("PASS" if ok else "FAIL"),
                    measured if own is None else own))

    def faster_than_peers(metric, peers=PEERS):
        mine = get(metric, candidate)
        theirs = [get(metric, p) for p in peers if get(metric, p) is not None]
        if mine is None or not theirs:
            return None
        return all(mine < t for t in theirs)

    def fmt(r):
        return "-" if r is None else f"{r:.2f}x"

    for metric in ("sqlite_select", "lmdb_get", "rand_read_warm_fd", "rand_read_warm_reopen",
                   "seq_read_warm"):
        r = ratio(metric)
        check(f"{metric} <= 1.10x plain", None if r is None else r <= 1.10, fmt(r))
    # "engine commits (fsync per transaction)": every engine row that commits.
    engine_rows = [m for m in ("engine_insert", "engine_update", "engine_commits") if m in med]
    for metric in ["sqlite_insert", "lmdb_put"] + engine_rows:
        r = ratio(metric)
        peers = faster_than_peers(metric)
        ok = None if r is None else (r <= 1.5 and peers is not False)
        peer_txt = " ".join(f"{p} {fmt(ratio(metric, p))}" for p in PEERS if get(metric, p))
        check(f"{metric} <= 1.5x plain and below peers", ok, f"{fmt(r)} ({peer_txt})", fmt(r))
    check("mmap below gocryptfs and securefs", faster_than_peers("mmap"),
          " ".join(f"{t} {fmt(ratio('mmap', t))}" for t in (candidate,) + PEERS), fmt(ratio("mmap")))
    for metric in ("seq_write", "seq_read_cold"):
        check(f"{metric} faster than gocryptfs", faster_than_peers(metric, ("gocryptfs",)),
              f"{fmt(ratio(metric))} vs gocryptfs {fmt(ratio(metric, 'gocryptfs'))}", fmt(ratio(metric)))
    daemon = dict(daemon_rows(result))
    for label in ("CPU s per GB written (seq write+fsync)", "CPU s per GB read (seq read cold)"):
        mine, theirs = daemon[label].get(candidate), daemon[label].get("gocryptfs")
        ok = None if mine is None or theirs is None else float(mine) <= float(theirs)
        check(f"{label} <= gocryptfs", ok, f"{mine} vs {theirs}", mine)
    peak = daemon["peak RSS MB, seq write + cold read"].get(candidate)
    check("daemon peak RSS < 100 MB", None if peak is None else float(peak) < 100, f"{peak} MB")
    growth = daemon["RSS growth MB, 1/8 -> end of seq write"].get(candidate)
    # "not growing with file size": allow allocator noise, not a per-MiB cost.
    check("RSS not growing with file size (< 8 MB over the write)",
          None if growth is None else float(growth) < 8, f"{growth} MB")
    return out


def render(result) -> str:
    meta = result["meta"]
    names = meta["targets"]
    med = medians(result)
    sizes = meta["sizes"]
    parts = [f"realmfs bench {meta['date']} on {meta['host']}: "
             f"{'quick' if meta['quick'] else 'full'}, {meta['reps']} rep(s), {meta['seconds']} s; "
             f"file {sizes['file_mib']} MiB, mmap {sizes['mmap_mib']} MiB, {sizes['db_rows']} rows"]
    for name, why in meta["skipped"].items():
        parts.append(f"skipped {name}: {why}")
    rows, ratio_rows = [], []
    others = [n for n in names if n != "plain"]
    for metric in _metric_order(result):
        amount, unit = result["amounts"][metric]
        cells = []
        for t in names:
            s = med[metric].get(t)
            cells.append("error" if s is None and _errored(result, metric, t) else _cell(s, amount, unit))
        rows.append([metric] + cells)
        plain = med[metric].get("plain")
        ratio_rows.append([metric] + [
            f"{med[metric][t] / plain:.2f}x" if plain and med[metric].get(t) is not None else
            ("error" if _errored(result, metric, t) else "-") for t in others]
            + [METRICS.get(metric, "")])
    parts += ["", "Medians (time; throughput or time per operation)", _table(["metric"] + names, rows)]
    parts += ["", "Ratios to plain (time / plain time; lower is better)",
              _table(["metric"] + others + ["what"], ratio_rows)]
    fuse = [n for n in names if n in result["daemon"] or n in result["peak_rss_overall"]]
    if fuse:
        d_rows = [[label] + [vals.get(t, "-") for t in fuse] for label, vals in daemon_rows(result)]
        parts += ["", "FUSE daemon (process tree of the daemon we started)",
                  _table(["daemon"] + fuse, d_rows)]
    if CANDIDATE in names:
        mine = checks(result)
        header = ["target", "measured", "verdict"]
        if FLOOR in names:
            # the same checks for the crypto-free pass-through: where it fails too, the
            # target is out of reach of any filesystem on this FUSE request path
            floor = checks(result, FLOOR)
            header += ["pyfuse floor", "floor verdict"]
            mine = [c[:3] + (f[3], f[2]) for c, f in zip(mine, floor)]
        measured = [list(c[:len(header)]) for c in mine if c[2] != "n/a"]  # skip workloads not run
        if measured:
            parts += ["", "Targets of the issue (realmfs)", _table(header, measured)]
    if result["errors"]:
        parts += ["", "Errors"] + [f"  {k}: {v}" for k, v in result["errors"].items()]
    return "\n".join(parts)


def with_medians(result) -> dict:
    out = dict(result, medians=medians(result))
    if CANDIDATE in result["meta"]["targets"]:
        out["checks"] = [c[:3] for c in checks(result)]
    if FLOOR in result["meta"]["targets"]:
        out["floor_checks"] = [c[:3] for c in checks(result, FLOOR)]
    return out
