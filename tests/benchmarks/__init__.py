"""Smoke tests of the benchmark scripts, mirroring ``benchmarks/``."""
