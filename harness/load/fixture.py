"""The library side of the ``ws_load`` fixture: load runs in the background against the test's server.

A browser test asks for load while it drives its page::

    def test_the_page_stays_correct_under_load(ws_helper, ws_load):
        load = ws_load("fanout", subscribers=20, rate=50)   # starts, returns once measuring
        ws_helper.subscribe("general")
        ws_helper.publish("general", "hello")
        ws_helper.expect_frame("channel_message", {"content": "hello"})
        result = load.stop()                                # the figures so far
        assert result.total.counter("lost") == 0

:class:`LoadRuns` is what the fixture yields: calling it starts a scenario
(by its CLI name with its parameters, or a :class:`~harness.load.Scenario`
or :class:`~harness.load.Ramp` built by the test) on its own thread with
:func:`~harness.load.start_background`, aimed at the test's ``ws_server``
and speaking the app's profile: the Nova protocol (authenticated with the
harness's ``ws_api_key``) for the reference server, the generic one for any
other app.  Runs last until stopped (``duration`` defaults to unbounded);
:meth:`LoadRuns.stop_all`, called at teardown, stops those still running.
:meth:`LoadRuns.check` then fails the test for a run that was aborted
(unreachable server, rejected handshakes, a server that closed its
connections) or missed one of its ``thresholds``, unless the run was
started with ``check=False`` (a test that breaks the server on purpose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import LoadConfigError
from .ramp import Ramp
from .results import RunResult
from .scenarios import GenericProtocol, LoadProtocol, NovaProtocol, Scenario, create

if TYPE_CHECKING:
    from ..config import WsConfig
    from .engine import BackgroundRun

__all__ = ["LoadRun", "LoadRuns", "load_protocol_for", "load_url_for"]

#: How long starting a run may take to connect its clients before the call fails (seconds).
DEFAULT_START_TIMEOUT = 30.0


def load_protocol_for(profile_name: str, config: WsConfig) -> LoadProtocol:
    """The load protocol that speaks the app of ``profile_name``: Nova's, else the generic one."""
    if profile_name == "nova":
        return NovaProtocol(api_key=config.api_key)
    return GenericProtocol()


def load_url_for(profile_name: str, config: WsConfig, http_url: str) -> str:
    """Where load clients connect: the server's base URL (Nova), else ``ws_path`` with ``{client_id}`` kept."""
    if profile_name == "nova":
        return http_url
    return config.ws_url(http_url, "{client_id}")


@dataclass
class LoadRun:
    """One background run started by :class:`LoadRuns`: stop it for its figures."""

    scenario: Scenario | Ramp
    thresholds: tuple[str, ...]
    check: bool
    _run: BackgroundRun = field(repr=False)
    _result: RunResult | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """Whether the run ended (stopped, or its ``duration`` passed, or it was aborted)."""
        return self._result is not None or self._run.done

    def stop(self, timeout: float = 30.0) -> RunResult:
        """End the run now (its clients drain and close) and return its figures; idempotent."""
        if self._result is None:
            self._result = self._run.stop(timeout)
        return self._result

    def result(self, timeout: float | None = None) -> RunResult:
        """Wait for the run's natural end (a finite ``duration``) and return its figures."""
        if self._result is None:
            self._result = self._run.result(timeout)
        return self._result


class LoadRuns:
    """Starts load scenarios against one server for one test (what ``ws_load`` yields).

    ``url`` and ``protocol`` say where and how the clients speak; build it
    with :meth:`for_server` from a ``ws_server`` and its profile's name.
    """

    def __init__(self, url: str, protocol: LoadProtocol, *, start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.url = url
        self.protocol = protocol
        self.start_timeout = start_timeout
        self.runs: list[LoadRun] = []

    @classmethod
    def for_server(cls, server: Any, profile_name: str, **kwargs: Any) -> LoadRuns:
        """Runs aimed at ``server`` (a :class:`~harness.serving.ServerUnderTest`) in ``profile_name``'s protocol."""
        return cls(
            load_url_for(profile_name, server.config, server.http_url),
            load_protocol_for(profile_name, server.config),
            **kwargs,
        )

    def __call__(
        self,
        scenario: str | Scenario | Ramp,
        *,
        thresholds: Sequence[str] = (),
        check: bool = True,
        wait: bool = True,
        reset_via_proxy: bool = False,
        **parameters: Any,
    ) -> LoadRun:
        """Start ``scenario`` in the background and return its :class:`LoadRun`.

        ``scenario`` is a name (``connections``, ``publish``, ``fanout``,
        ``reconnect-storm``) with its ``parameters`` (``clients``, ``rate``,
        ``duration`` ...; ``duration`` defaults to unbounded), or a scenario
        or ramp object, used as given.  With ``wait`` (the default) the call
        returns once every client is connected and the measured phase began,
        so what the test does next happens under load; it fails if that takes
        longer than ``start_timeout``.  ``thresholds`` (``"p99<50ms"``,
        ``"lost==0"``...) and an aborted run fail the test at teardown unless
        ``check`` is false.  ``reset_via_proxy``: the load's clients go through a
        fault proxy of the run's own (not the page's), and each drop of a
        ``reconnect-storm`` is a TCP reset there, which the server sees too.
        """
        from .engine import EngineOptions, start_background

        if isinstance(scenario, str):
            parameters.setdefault("duration", math.inf)
            built: Scenario | Ramp = create(scenario, protocol=self.protocol, **parameters)
        elif parameters:
            raise LoadConfigError(
                f"ws_load got a scenario object and parameters {sorted(parameters)}: give the "
                "parameters to the scenario's constructor, or pass the scenario by name"
            )
        else:
            built = scenario
        options = EngineOptions(reset_via_proxy=True) if reset_via_proxy else None
        handle = start_background(built, self.url, thresholds=list(thresholds), options=options)
        run = LoadRun(built, tuple(thresholds), check, handle)
        self.runs.append(run)
        if wait and not handle.wait_measuring(self.start_timeout):
            result = run.stop()
            raise LoadConfigError(
                f"the {built.name} load did not connect its clients to {self.url} within "
                f"{self.start_timeout:g} s; so far: {result.headline()}"
            )
        return run

    def stop_all(self, timeout: float = 30.0) -> list[RunResult]:
        """Stop every run still going (teardown) and return every run's figures, in start order."""
        return [run.stop(timeout) for run in self.runs]

    def check(self) -> None:
        """Raise AssertionError for each checked run that was aborted or missed a threshold."""
        failures = []
        for number, run in enumerate(self.runs, 1):
            if not run.check:
                continue
            result = run.stop()
            if result.aborted:
                failures.append(f"load run {number} ({run.scenario.name}) was aborted: {result.aborted}")
            failed = [t for t in result.thresholds if not t.passed]
            for outcome in failed:
                failures.append(f"load run {number} ({run.scenario.name}): threshold {outcome.message}")
            if result.aborted or failed:
                failures.append(f"    {result.headline()}")
        if failures:
            raise AssertionError(
                "\n".join(failures)
                + "\nStart the run with check=False if the test breaks the server on purpose."
            )
