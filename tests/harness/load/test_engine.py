"""The engine against real servers on loopback: the reference server, bare echo servers, bad input.

Runs are short (fractions of a second measured) and run on a thread of their
own (``start_background``), so they never meet an event loop left on the
main thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from harness.load import (
    Connections,
    EngineOptions,
    Fanout,
    GenericProtocol,
    LoadConfigError,
    NovaProtocol,
    Publish,
    Ramp,
    ReconnectStorm,
    RunResult,
    Scenario,
    run,
    start_background,
)
from harness.load.engine import check_url

from .conftest import WsApp

#: Limits of the in-process reference server for load tests: the load, not the limits, is under test.
UNLIMITED: dict[str, Any] = {
    "rate_limit_per_second": 1e9,
    "rate_limit_burst": 10**9,
    "max_unauthenticated_per_address": 10_000,
}

FAST = EngineOptions(open_timeout=2.0, drain_timeout=2.0, close_timeout=1.0, setup_timeout=5.0)


def _run(scenario: Scenario | Ramp, url: str | None, **kwargs: Any) -> RunResult:
    kwargs.setdefault("options", FAST)
    return start_background(scenario, url, **kwargs).result(timeout=60)


def _base(server: Any) -> str:
    return f"ws://127.0.0.1:{server.port}"


# ----------------------------------------------------------------- each scenario, reference server


def test_publish_measures_confirmations_at_the_offered_rate(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)
    result = _run(Publish(clients=2, rate=200.0, duration=0.5), _base(server), thresholds=["errors==0", "p99<2s"])
    step = result.steps[0]
    assert result.aborted is None and result.passed, result.headline()
    assert step.counter("sent") >= 95
    assert step.counter("confirmed") == step.counter("sent")
    assert step.latency["publish"].count == step.counter("confirmed")
    assert step.achieved_rate == pytest.approx(200.0, rel=0.15)
    assert step.offered_rate == 200.0
    assert result.steps[0].counter("unconfirmed") == 0


def test_connections_holds_authenticated_connections(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)
    result = _run(Connections(clients=30, connect_rate=300.0, duration=0.2), _base(server))
    step = result.steps[0]
    assert result.aborted is None, result.headline()
    assert step.counter("opened") == 30
    assert step.gauges["open"] == 30
    assert step.latency["connect"].count == 30
    assert step.errors == {}
    assert step.setup >= 29 / 300.0  # paced at the connect rate


def test_fanout_delivers_every_seq_once_and_in_order_to_every_subscriber(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)
    result = _run(Fanout(publishers=2, subscribers=5, rate=100.0, duration=0.5), _base(server))
    step = result.steps[0]
    assert result.aborted is None, result.headline()
    assert step.counter("confirmed") >= 40
    assert step.counter("delivered") == 5 * step.counter("confirmed")
    for name in ("lost", "duplicated", "gaps", "out_of_order"):
        assert step.counter(name) == 0, name
    assert step.latency["delivery"].count == step.counter("delivered")


def test_reconnect_storm_loses_and_duplicates_nothing_across_twenty_drops(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)
    storm = ReconnectStorm(publishers=1, subscribers=20, rate=100.0, drop_share=1.0, drops_per_client=1,
                           duration=1.5, reconnect_delay=0.02)
    result = _run(storm, _base(server), thresholds=["lost==0", "duplicated==0"])
    step = result.steps[0]
    assert result.passed, result.headline()
    assert step.counter("drops") >= 20
    assert step.counter("reconnects") == step.counter("drops")
    assert step.counter("lost") == 0 and step.counter("duplicated") == 0
    assert step.counter("replayed") > 0  # the resubscriptions did replay what was missed


def test_reconnect_storm_through_the_fault_proxy_resets_each_dropped_connection_and_loses_nothing(
    server_factory: Any,
) -> None:
    """With reset_via_proxy every drop is a TCP reset at the run's own proxy, seen by client and server."""
    from dataclasses import replace

    server = server_factory(**UNLIMITED)
    storm = ReconnectStorm(publishers=1, subscribers=20, rate=100.0, drop_share=1.0, drops_per_client=1,
                           duration=1.5, reconnect_delay=0.02)
    result = _run(storm, _base(server), options=replace(FAST, reset_via_proxy=True),
                  thresholds=["lost==0", "duplicated==0"])
    step = result.steps[0]
    assert result.passed, result.headline()
    assert result.url == _base(server)  # the server's URL is reported, not the proxy's
    assert step.counter("drops") >= 20
    assert step.gauges["proxy_resets"] == step.counter("drops")
    assert step.counter("reconnects") == step.counter("drops")
    assert step.counter("lost") == 0 and step.counter("duplicated") == 0
    assert step.counter("replayed") > 0


def test_reset_via_proxy_needs_a_ws_url() -> None:
    from dataclasses import replace

    storm = ReconnectStorm(publishers=1, subscribers=1, duration=0.2)
    with pytest.raises(LoadConfigError, match=r"reset_via_proxy \(CLI: --reset-via-proxy\) needs a ws:// server URL"):
        run(storm, "wss://127.0.0.1:9", options=replace(FAST, reset_via_proxy=True))


def test_ramp_runs_steps_until_the_knee(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)
    base = Publish(clients=1, duration=0.3)
    easy = _run(Ramp(base, values=(20.0, 40.0), max_p99=10.0), _base(server))
    assert [s.parameters["rate"] for s in easy.steps] == [20.0, 40.0]
    assert easy.knee is None and easy.scenario == "ramp"
    # Any latency is over a 1 us limit: the first step is the knee and the ramp stops there.
    strict = _run(Ramp(base, values=(20.0, 40.0), max_p99=1e-6), _base(server))
    assert len(strict.steps) == 1 and strict.knee == 0
    assert strict.steps[0].degraded is not None and "p99" in strict.steps[0].degraded


def test_a_rate_over_the_servers_limit_is_said_and_its_refusals_counted(server_factory: Any) -> None:
    server = server_factory(rate_limit_per_second=20.0, rate_limit_burst=5, rate_limit_strikes=1000)
    scenario = Publish(clients=1, rate=100.0, duration=0.5, protocol=NovaProtocol(rate_limit=20.0))
    result = _run(scenario, _base(server))
    assert any("100 messages/s each, over the server's limit of 20/s" in w for w in result.warnings)
    step = result.steps[0]
    assert step.errors.get("error:rate_limited", 0) > 0
    assert step.counter("confirmed") < step.counter("sent")
    assert step.counter("unconfirmed") == 0  # a refused publish is answered, so never left pending


# ----------------------------------------------------------------- generic profile, bare echo server


def test_generic_publish_against_an_echo_server(ws_app: Callable[..., WsApp]) -> None:
    app = ws_app()
    result = _run(Publish(clients=2, rate=None, duration=0.3, protocol=GenericProtocol()), app.url)
    step = result.steps[0]
    assert result.aborted is None, result.headline()
    assert step.counter("confirmed") > 10  # closed loop: as fast as the echoes come
    assert step.throughput > 0
    assert step.errors == {}


def test_generic_connections_against_any_server(ws_app: Callable[..., WsApp]) -> None:
    app = ws_app()
    result = _run(Connections(clients=20, duration=0.1, protocol=GenericProtocol()), app.url)
    assert result.steps[0].counter("opened") == 20
    assert result.steps[0].gauges["open"] == 20


# ----------------------------------------------------------------- bad input


def test_an_unreachable_port_aborts_with_the_connect_errors_counted(refused_url: str) -> None:
    started = time.monotonic()
    result = _run(Connections(clients=5, duration=5.0), refused_url)
    assert result.aborted is not None
    assert result.aborted.startswith(f"no client could connect to {refused_url}")
    assert "connect:refused x5" in result.aborted
    assert result.steps[0].errors == {"connect:refused": 5}
    assert result.steps[0].counter("failed") == 5
    assert not result.passed
    assert time.monotonic() - started < 5.0  # it did not wait out the duration


def test_a_rejected_handshake_aborts_and_keeps_the_figures(ws_app: Callable[..., WsApp]) -> None:
    def forbid(connection: ServerConnection, request: Any) -> Response:
        return connection.respond(403, "no load here\n")

    app = ws_app(process_request=forbid)
    result = _run(Publish(clients=3, rate=10.0, duration=1.0, protocol=GenericProtocol()), app.url)
    assert result.aborted is not None and "handshake:403 x3" in result.aborted
    assert result.steps[0].errors == {"handshake:403": 3}
    assert result.to_dict()["steps"][0]["errors"] == {"handshake:403": 3}


def test_a_server_closing_mid_run_aborts_the_run_early(ws_app: Callable[..., WsApp]) -> None:
    async def close_soon(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)
            await ws.close(1011, "going down")

    app = ws_app(close_soon)
    started = time.monotonic()
    result = _run(Publish(clients=4, rate=40.0, duration=10.0, protocol=GenericProtocol()), app.url)
    assert result.aborted is not None and result.aborted.startswith("every connection was closed")
    step = result.steps[0]
    assert step.errors == {"close:1011": 4}
    assert step.counter("closed_by_server") == 4
    assert step.counter("confirmed") >= 1  # what was measured before is kept
    assert time.monotonic() - started < 10.0


def test_non_loopback_urls_are_refused_unless_allowed() -> None:
    with pytest.raises(LoadConfigError, match="is not on this machine"):
        start_background(Connections(clients=1), "ws://192.0.2.1:8000")
    assert check_url("ws://192.0.2.1:8000", allow_remote=True) == "ws://192.0.2.1:8000"
    assert check_url("http://localhost:8000/x") == "ws://localhost:8000/x"
    assert check_url("ws://[::1]:1") == "ws://[::1]:1"
    with pytest.raises(LoadConfigError, match="expected a ws://"):
        check_url("ftp://127.0.0.1/")


def test_a_run_is_bounded_in_clients(refused_url: str) -> None:
    with pytest.raises(LoadConfigError, match="more than max_clients=10"):
        _run(Connections(clients=11), refused_url, options=EngineOptions(max_clients=10))


def test_a_bad_threshold_raises_before_the_run(refused_url: str) -> None:
    with pytest.raises(LoadConfigError, match="bad threshold 'p99<5'"):
        start_background(Connections(clients=1), refused_url, thresholds=["p99<5"])


async def test_run_inside_a_running_loop_runs_on_a_thread_of_its_own() -> None:
    """As in a pytest worker where Playwright's sync API keeps a loop registered on the main thread."""
    import asyncio

    loop = asyncio.get_running_loop()
    result = run(Connections(clients=1), "ws://127.0.0.1:1")  # refused at once: aborted, figures kept
    assert result.aborted is not None and "connect:refused" in result.aborted
    assert loop.is_running()


# ----------------------------------------------------------------- background runs and the embedded server


def test_a_background_run_goes_on_until_stopped(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)
    handle = start_background(Publish(clients=2, rate=50.0, duration=math.inf), _base(server), options=FAST)
    assert handle.wait_measuring(10), "the background run did not start measuring within 10 s"
    assert not handle.done
    result = handle.stop(timeout=20)
    assert handle.done
    assert result.aborted is None
    assert result.steps[0].counter("opened") == 2
    assert result.steps[0].counter("confirmed") == result.steps[0].counter("sent")


def test_progress_reports_the_figures_so_far(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)
    seen: list[Any] = []
    options = EngineOptions(progress_interval=0.05, setup_timeout=5.0)
    _run(Publish(clients=1, rate=100.0, duration=0.4), _base(server), options=options, on_progress=seen.append)
    running = [p for p in seen if p.phase == "running"]
    assert running, [p.phase for p in seen]
    assert running[-1].sent > 0 and running[-1].clients == 1


def test_with_no_url_the_embedded_server_is_started_and_its_rss_reported() -> None:
    result = _run(Connections(clients=20, duration=0.2), None)
    assert result.aborted is None, result.headline()
    assert result.url.startswith("ws://127.0.0.1:")
    assert result.server is not None and result.server.connections == 20
    assert result.server.rss_loaded > 0
    assert result.to_dict()["server"]["rss_per_connection"] is not None


def test_a_failing_progress_callback_costs_no_figures(server_factory: Any) -> None:
    server = server_factory(**UNLIMITED)

    def broken(progress: Any) -> None:
        raise RuntimeError("terminal gone")

    options = EngineOptions(progress_interval=0.05, setup_timeout=5.0)
    result = _run(Publish(clients=1, rate=50.0, duration=0.3), _base(server), options=options, on_progress=broken)
    assert result.aborted is None
    assert result.steps[0].counter("confirmed") > 0
    assert any("on_progress raised RuntimeError('terminal gone')" in w for w in result.warnings)


def test_a_scenario_that_fails_ends_the_run_naming_the_error(ws_app: Callable[..., WsApp]) -> None:
    from harness.load.scenarios import VirtualClient

    class Broken(Publish):
        def make_client(self, session: Any, index: int) -> VirtualClient:
            client = super().make_client(session, index)

            def frame(text: str, now: float) -> list[Any]:
                raise ValueError("bad state machine")

            # The engine hands frames to reply(), the Locust driver to frame(): both fail.
            client.frame = frame  # type: ignore[method-assign]
            client.reply = frame  # type: ignore[method-assign]
            return client

    app = ws_app()
    result = _run(Broken(clients=2, rate=None, duration=5.0, protocol=GenericProtocol()), app.url)
    assert result.aborted == "the load engine failed: ValueError('bad state machine')"
    assert result.steps[0].counter("sent") >= 1


def test_set_up_ends_when_no_client_makes_progress(ws_app: Callable[..., WsApp]) -> None:
    app = ws_app()  # an echo server never greets: Nova clients wait for connection_established
    options = EngineOptions(open_timeout=0.2, close_timeout=0.5)
    started = time.monotonic()
    result = _run(Connections(clients=3, duration=5.0), app.url, options=options)
    assert result.aborted is not None
    assert result.aborted.startswith(f"no client could connect to {app.url} within ")
    assert result.aborted.endswith("s (no client set up for 1.4 s): setup:timeout x3")
    assert result.steps[0].errors == {"setup:timeout": 3}
    assert time.monotonic() - started < 5.0


def test_a_real_result_round_trips_through_json(server_factory: Any, tmp_path: Any) -> None:
    import json

    from harness.load import read_json, write_csv, write_json

    server = server_factory(**UNLIMITED)
    result = _run(Fanout(publishers=1, subscribers=2, rate=50.0, duration=0.3), _base(server), thresholds=["lost==0"])
    assert RunResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert read_json(write_json(result, tmp_path / "run.json")) == result
    steps_csv, timeline_csv = write_csv(result, tmp_path / "run.csv")
    assert "delivery.p99_ms" in steps_csv.read_text().splitlines()[0]
    assert len(timeline_csv.read_text().splitlines()) >= 2
