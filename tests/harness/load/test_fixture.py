"""The ``ws_load`` fixture, as a consumer project uses it: one pytester subprocess run per behaviour.

Spec: ``ws_load(name, **parameters)`` starts a scenario in the background
against the test's ``ws_server`` in the app's protocol (Nova for the
reference server, generic for any other app) and returns once its clients
are connected; ``stop()`` returns its figures; runs still going at teardown
are stopped; an aborted run or a missed threshold fails the test at
teardown unless started with ``check=False``; a bad scenario is an error
naming the known ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: Seconds one pytester run may take before it is killed.
RUN_TIMEOUT = 120

ROOT = Path(__file__).resolve().parents[3]


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT)


def test_a_run_against_the_reference_server_reports_its_figures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_publish(ws_load):
            load = ws_load("publish", clients=2, rate=20, thresholds=["errors==0"])
            result = load.stop()
            total = result.total
            assert result.aborted is None, result.aborted
            assert result.profile == "nova"
            assert total.counter("confirmed") > 0, result.headline()
            assert total.latency["publish"].count == total.counter("confirmed")
            assert total.error_count == 0
            assert load.done

        def test_fanout_delivers_every_seq(ws_load):
            load = ws_load("fanout", subscribers=3, rate=20, thresholds=["lost==0", "duplicated==0"])
            result = load.stop()
            assert result.total.counter("delivered") > 0, result.headline()
            assert all(t.passed for t in result.thresholds), result.thresholds
        """
    )
    result = _run(pytester)
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=2)


def test_a_reconnect_storm_can_reset_its_drops_through_a_fault_proxy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_storm(ws_load, ws_server):
            load = ws_load("reconnect-storm", subscribers=6, rate=50, drop_share=1.0, drops_per_client=1,
                           reconnect_delay=0.02, duration=1.0, reset_via_proxy=True,
                           thresholds=["lost==0", "duplicated==0"])
            result = load.result(timeout=30)
            step = result.steps[0]
            assert result.passed, result.headline()
            assert step.counter("drops") >= 5, result.headline()
            assert step.gauges["proxy_resets"] == step.counter("drops")
            assert step.counter("reconnects") == step.counter("drops")
            assert result.url.startswith(ws_server.http_url.replace("http", "ws", 1).rstrip("/"))
        """
    )
    result = _run(pytester)
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1)


def test_a_missed_threshold_fails_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_too_strict(ws_load):
            ws_load("publish", clients=1, rate=10, thresholds=["p99<1us"])

        def test_too_strict_but_unchecked(ws_load):
            ws_load("publish", clients=1, rate=10, thresholds=["p99<1us"], check=False)
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    out = result.stdout.str()
    assert "ERROR at teardown of test_too_strict" in out
    assert "threshold" in out and "p99<1us" in out
    assert "check=False" in out  # the way out is named


def test_a_run_left_going_is_stopped_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        RUNS = []

        def test_starts_and_leaves(ws_load):
            RUNS.append(ws_load("connections", clients=3))
            assert not RUNS[0].done

        def test_it_was_stopped():
            [run] = RUNS
            assert run.done
            result = run.stop()
            assert result.total.counter("opened") == 3, result.headline()
        """
    )
    result = _run(pytester, "-p", "no:randomly")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=2)


def test_an_unknown_scenario_names_the_known_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from harness.load import LoadConfigError

        def test_typo(ws_load):
            with pytest.raises(LoadConfigError, match="unknown scenario 'fanuot'; known: .*fanout"):
                ws_load("fanuot")
        """
    )
    result = _run(pytester)
    assert result.ret == 0, result.stdout.str()


def test_another_app_gets_the_generic_protocol(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo chat app (no Nova protocol): idle connections to its ``ws_path``, each a real socket."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeini(
        "[pytest]\nws_app = fixtures.apps.chat.app:app\nws_path = /ws/{client_id}\n"
        "ws_page_path = /?client={client_id}\n"
    )
    pytester.makepyfile(
        """
        def test_idle_connections(ws_load, ws_server):
            load = ws_load("connections", clients=4)
            assert load.scenario.protocol.name == "generic"
            result = load.stop()
            assert result.aborted is None, result.aborted
            assert result.total.counter("opened") == 4, result.headline()
            assert ws_server.kind == "app"
        """
    )
    result = _run(pytester)
    assert result.ret == 0, result.stdout.str()
