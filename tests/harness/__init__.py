"""Tests of the harness library, mirroring ``harness/``."""
