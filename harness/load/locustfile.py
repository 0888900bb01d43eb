"""The locustfile of the load scenarios (docs/locust.md)::

    locust -f harness/load/locustfile.py --host ws://127.0.0.1:8000 --scenario fanout --rate 200
    locust -f harness/load/locustfile.py --headless -u 50 -r 50 -t 30s --host ws://127.0.0.1:8000 \\
        --scenario publish --rate 1000 --csv run --html run.html

The users and the options (``--scenario``, ``--clients``, ``--publishers``,
``--rate``... listed by ``locust -f harness/load/locustfile.py --help``) come
from :mod:`harness.load.locust`; a locustfile of your own can import the same
two classes, and subclass them.
"""

from __future__ import annotations

from harness.load.locust import WsClientUser, WsPublisherUser

__all__ = ["WsClientUser", "WsPublisherUser"]
