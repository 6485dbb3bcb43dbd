"""Shared fixtures. Mount fixtures live in tests/mount/conftest.py."""
