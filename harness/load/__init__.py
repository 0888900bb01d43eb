"""Load, latency and connection-limit testing of a WebSocket server (``nova-ws load``).

The tree is the architecture:

- :mod:`~harness.load.scenarios` (pure): the scenarios ``connections``,
  ``publish``, ``fanout``, ``reconnect-storm`` as plain dataclasses whose
  virtual clients are sans-I/O state machines, and the load protocols (Nova,
  generic) that build and recognise frames;
- :mod:`~harness.load.ramp` (pure): ``ramp``, stepping a scenario's load and
  finding the knee;
- :mod:`~harness.load.metrics` (pure): HdrHistogram latencies, counters, a
  bounded timeline;
- :mod:`~harness.load.results` and :mod:`~harness.load.thresholds` (pure):
  typed results that round-trip through JSON, thresholds such as ``p99<50ms``;
- :mod:`~harness.load.output`: JSON and CSV writers; :mod:`~harness.load.report`:
  the offline HTML report (inline SVG charts), built from ``RunResult.to_dict()``;
- :mod:`~harness.load.cli`: ``nova-ws load`` (also ``python -m harness load``), with
  :mod:`~harness.load.progress`, its live progress line;
- :mod:`~harness.load.engine`: the asyncio engine on python-websockets that
  drives the scenarios (``run``, ``arun``, ``start_background``), and
  :mod:`~harness.load.embedded`: the reference server it starts when given no URL;
- :mod:`~harness.load.fixture`: ``LoadRuns``, what the ``ws_load`` fixture yields
  (background runs against the test's server, checked at teardown).

The engine is imported on first use of its names, so the pure API imports
neither asyncio nor websockets.  See docs/load.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import LoadConfigError, LoadDependencyError, LoadError, LoadServerError
from .fixture import LoadRun, LoadRuns
from .metrics import Histogram, LatencySummary, Metrics, Timeline, TimelinePoint
from .output import read_json, write_csv, write_json
from .ramp import Ramp, parse_values
from .report import render_html, write_html
from .results import RunResult, ServerStats, StepResult, ThresholdOutcome
from .scenarios import (
    SCENARIOS,
    Close,
    Connect,
    Connections,
    Drop,
    Fanout,
    GenericProtocol,
    Incoming,
    LoadProtocol,
    NovaProtocol,
    Publish,
    ReconnectStorm,
    Recorder,
    Scenario,
    Send,
    SeqTracker,
    Session,
    VirtualClient,
    create,
)
from .thresholds import Threshold, evaluate, parse_all

if TYPE_CHECKING:
    from .embedded import EmbeddedServer, start_embedded_server
    from .engine import BackgroundRun, EngineOptions, Progress, arun, run, start_background

_LAZY = {
    "EmbeddedServer": ".embedded",
    "start_embedded_server": ".embedded",
    "BackgroundRun": ".engine",
    "EngineOptions": ".engine",
    "Progress": ".engine",
    "arun": ".engine",
    "run": ".engine",
    "start_background": ".engine",
}

__all__ = [
    "SCENARIOS",
    "BackgroundRun",
    "Close",
    "Connect",
    "Connections",
    "Drop",
    "EmbeddedServer",
    "EngineOptions",
    "Fanout",
    "GenericProtocol",
    "Histogram",
    "Incoming",
    "LatencySummary",
    "LoadConfigError",
    "LoadDependencyError",
    "LoadError",
    "LoadProtocol",
    "LoadRun",
    "LoadRuns",
    "LoadServerError",
    "Metrics",
    "NovaProtocol",
    "Progress",
    "Publish",
    "Ramp",
    "ReconnectStorm",
    "Recorder",
    "RunResult",
    "Scenario",
    "Send",
    "SeqTracker",
    "ServerStats",
    "Session",
    "StepResult",
    "Threshold",
    "ThresholdOutcome",
    "Timeline",
    "TimelinePoint",
    "VirtualClient",
    "arun",
    "create",
    "evaluate",
    "parse_all",
    "parse_values",
    "read_json",
    "render_html",
    "run",
    "start_background",
    "start_embedded_server",
    "write_csv",
    "write_html",
    "write_json",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.load' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
