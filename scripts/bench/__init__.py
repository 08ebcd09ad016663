"""Helpers of the benchmark suite (scripts/bench.py is the entry point)."""
