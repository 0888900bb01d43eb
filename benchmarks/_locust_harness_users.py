"""A locustfile of the harness's own Locust users, for ``benchmarks/load_engine.py --locust-user harness``.

Used while ``harness/load/locustfile.py`` does not exist (the benchmark
prefers that file when it does); importing :mod:`harness.load.locust` is
all a locustfile needs: its user classes and its command-line options.
"""

from __future__ import annotations

from harness.load.locust import WsClientUser, WsPublisherUser

__all__ = ["WsClientUser", "WsPublisherUser"]
