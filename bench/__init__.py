"""Benchmarks: measurements against the local devstack, not tests."""
