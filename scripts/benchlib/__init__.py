"""Helpers of scripts/bench.py: targets (plain, realmfs, peers), workloads, daemon monitor."""
