"""The per-request timing histogram (realmfs/fs/reqstats.py): written on SIGUSR1 and at
unmount when REALMFS_REQUEST_STATS names a file; nothing at all without it."""

from __future__ import annotations

import json
import os
import signal
import time

from realmfs.fs import reqstats


def _wait_for(path: str) -> dict:
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "no histogram written"
        time.sleep(0.02)
    with open(path) as source:
        return json.load(source)


def test_a_mount_with_the_variable_counts_every_request(env, monkeypatch):
    stats = os.path.join(env.tmp, "requests.json")
    monkeypatch.setenv(reqstats.ENV, stats)       # the daemon inherits the environment
    mount = env.mount()
    with open(env.m("f"), "wb") as f:
        f.write(b"x" * 10000)
    os.kill(mount.pid, signal.SIGUSR1)
    first = _wait_for(stats)
    assert first["write"]["count"] >= 1 and first["write"]["bytes"] == 10000
    assert sum(first["write"]["buckets_us"].values()) == first["write"]["count"]
    os.unlink(stats)
    with open(env.m("f"), "rb") as f:
        assert f.read() == b"x" * 10000
    env.unmount()
    second = _wait_for(stats)       # at unmount: only what came after the first dump
    assert "write" not in second and "destroy" in second
    assert "write" in reqstats.render(first)


def test_without_the_variable_the_operations_are_served_unwrapped():
    ops = object()
    assert reqstats.wrap(ops, environ={}) is ops
