"""The nova_ws pytest plugin as a consumer project sees it (pytester, subprocess runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.browser import launch as browser
from harness.errors import BrowserNotFoundError


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=180)


def test_options_are_listed_in_a_help_group(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--help")
    out = result.stdout.str()
    assert "Nova WebSocket harness" in out
    for option in ("--ws-app", "--ws-base-url", "--ws-mode", "--ws-timeout", "--ws-api-key", "--ws-test-ids"):
        assert option in out, option
    for ini in ("ws_app", "ws_mode", "ws_timeout", "ws_api_key", "ws_path", "ws_page_path"):
        assert re.search(rf"^\s+{ini} \(", out, re.MULTILINE), ini


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    out = _run(pytester, "--markers").stdout.str()
    for marker in ("ws_real_time", "ws_mode(mode)", "ws_allow_invalid_frames", "ws_client_id(id)"):
        assert f"@pytest.mark.{marker}" in out, marker


def test_config_resolves_cli_over_env_over_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nws_api_key = from-ini\nws_timeout = 9\nws_mode = synthetic\n")
    pytester.makepyfile(
        """
        def test_config(ws_config):
            assert ws_config.api_key == "from-cli"
            assert ws_config.timeout == 3.0
            assert ws_config.mode == "synthetic"
        """
    )
    monkeypatch.setenv("NOVA_WS_API_KEY", "from-env")
    monkeypatch.setenv("NOVA_WS_TIMEOUT", "3")
    result = _run(pytester, "--ws-api-key=from-cli")
    result.assert_outcomes(passed=1)


def test_a_bad_setting_stops_the_run_once_at_start_up(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "def test_a(ws_config):\n    pass\n\ndef test_b(ws_config):\n    pass\n"
    )
    result = _run(pytester, "--ws-timeout=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ws-timeout: invalid value 'soon'*"])
    assert str(result.stderr).count("invalid value") == 1
    assert "test_a" not in str(result.stdout)  # nothing ran


def test_ws_config_fixture_can_be_overridden(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def ws_config(ws_config):
            return ws_config.replace(api_key="my-key", test_ids={"auth_status": "login-state"})
        """
    )
    pytester.makepyfile(
        """
        def test_override(ws_config):
            assert ws_config.api_key == "my-key"
            assert ws_config.test_ids.auth_status == "login-state"
        """
    )
    _run(pytester).assert_outcomes(passed=1)


def test_consumer_project_uses_ws_server_and_ws_client(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx

        def test_two_parties(ws_server, ws_client):
            assert httpx.get(ws_server.http_url + "/health").json()["status"] == "ok"
            alice, bob = ws_client(), ws_client()
            alice.subscribe("general")
            confirmation = bob.publish("general", "hello from bob")
            message = alice.expect("channel_message", match={"content": "hello from bob"})
            assert message["data"]["seq"] == confirmation["seq"]
            bob.expect_nothing("channel_message", within=0.2)
        """
    )
    _run(pytester).assert_outcomes(passed=1)


def test_consumer_project_drives_the_page_with_ws_helper(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_authenticate(ws_helper):
            ws_helper.authenticate("valid-test-key")
            ws_helper.wait_for_auth_status("Authenticated")
            assert ws_helper.expect_frame("auth_success")["data"]["client_id"] == ws_helper.client_id
        """
    )
    _run(pytester).assert_outcomes(passed=1)


def test_ws_helper_set_up_holds_whichever_fixture_opens_the_page_first(pytester: pytest.Pytester) -> None:
    """The clock and the seed go on the context before ``page`` opens, or after when ``page`` came first."""
    pytester.makepyfile(
        """
        import uuid
        import pytest
        from playwright.sync_api import expect

        def test_page_requested_before_the_helper(page, ws_helper):
            assert ws_helper.page is page
            before = page.evaluate("Date.now()")
            ws_helper.advance_clock(60_000)
            assert page.evaluate("Date.now()") - before == 60_000
            assert ws_helper.state()["backoff"]["seeded"]

        def test_another_page_of_the_context_is_not_journaled(ws_helper, context, ws_server):
            other = context.new_page()
            other.goto(ws_server.page_url("other-" + uuid.uuid4().hex[:8]))
            expect(other.get_by_test_id("connection-status")).to_have_text("connected")
            assert len(ws_helper.connections) == 1

        @pytest.mark.ws_real_time
        def test_real_time_has_no_virtual_clock(ws_helper):
            with pytest.raises(Exception, match="virtual"):
                ws_helper.advance_clock(1000)
        """
    )
    _run(pytester).assert_outcomes(passed=3)


def test_failure_writes_artifacts_and_prints_their_paths(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fails_after_traffic(ws_helper):
            ws_helper.authenticate("valid-test-key")
            ws_helper.wait_for_auth_status("Authenticated")
            assert False, "deliberate failure"
        """
    )
    result = _run(pytester, f"--output={pytester.path / 'results'}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "nova-ws artifacts" in out
    frames = Path(re.search(r"frames: (\S+)", out).group(1))  # type: ignore[union-attr]
    history = Path(re.search(r"status_history: (\S+)", out).group(1))  # type: ignore[union-attr]
    types = [json.loads(line)["type"] for line in frames.read_text().splitlines()]
    assert types[:3] == ["connection_established", "connect", "auth_success"]
    state = json.loads(history.read_text())["state"]
    assert state["authStatus"] in ("authenticated", "Authenticated") or state.get("status") == "connected"
    server_log = re.search(r"server_log: (\S+)", out)
    assert server_log is not None and Path(server_log.group(1)).read_text().strip()


def test_invalid_frames_fail_the_test_at_teardown_unless_marked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def _send_bad(ws_helper):
            ws_helper.page.evaluate(
                "(id) => new Promise((resolve, reject) => {"
                " const w = new WebSocket(location.origin.replace(/^http/, 'ws') + '/debug/' + id);"
                " w.onopen = () => { w.send('not json'); resolve(); };"
                " w.onclose = (e) => reject(new Error('closed ' + e.code)); })",
                "other-" + ws_helper.client_id,
            )
            ws_helper.expect_frame("error", match={"code": "invalid_message"})

        def test_unmarked(ws_helper):
            _send_bad(ws_helper)

        @pytest.mark.ws_allow_invalid_frames
        def test_marked(ws_helper):
            _send_bad(ws_helper)
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*frame(s) violated the protocol*", "*not json*"])


def test_ws_app_runs_another_projects_asgi_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        myapp="""
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/hello")
        def hello():
            return {"hello": "world"}
        """,
        test_app="""
        import httpx

        def test_it(ws_server):
            assert ws_server.kind == "app"
            assert ws_server.faults is not None  # FaultMiddleware wraps the app
            assert httpx.get(ws_server.http_url + "/hello").json() == {"hello": "world"}
        """,
    )
    _run(pytester, "--ws-app=myapp:app", "-p", "no:randomly").assert_outcomes(passed=1)


def test_ws_app_that_fails_to_start_reports_its_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        broken="""
        import logging
        from contextlib import asynccontextmanager
        from fastapi import FastAPI

        @asynccontextmanager
        async def lifespan(app):
            logging.getLogger("uvicorn.error").error("database unreachable: connection refused")
            raise RuntimeError("cannot start")
            yield

        app = FastAPI(lifespan=lifespan)
        """,
        test_broken="def test_it(ws_server):\n    pass\n",
    )
    result = _run(pytester, "--ws-app=broken:app")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*failed to start*", "*database unreachable*"])


def test_ws_app_that_cannot_be_imported_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_it(ws_server):\n    pass\n")
    result = _run(pytester, "--ws-app=no_such_module:app")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot import module 'no_such_module'*"])


def test_bogus_browser_path_is_a_clear_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVA_WS_CHROMIUM", "/nonexistent/chromium")
    pytester.makepyfile("def test_page(page):\n    pass\n")
    result = _run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*NOVA_WS_CHROMIUM='/nonexistent/chromium' is not an executable file*"])


def test_no_browser_error_names_both_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOVA_WS_CHROMIUM", raising=False)
    monkeypatch.setattr(browser, "_playwright_chromium", lambda: None)
    monkeypatch.setattr(browser, "_system_chromium", lambda: None)
    with pytest.raises(BrowserNotFoundError) as info:
        browser.find_chromium()
    message = str(info.value)
    assert "playwright install chromium" in message
    assert "apt-get install chromium" in message


def test_launch_args_disable_background_networking_and_sandbox_as_root() -> None:
    args = browser.launch_args(browser.ChromiumInfo("/usr/bin/chromium", "system"))
    assert args["executable_path"] == "/usr/bin/chromium"
    flags = args["args"]
    assert isinstance(flags, list)
    assert "--disable-background-networking" in flags and "--disable-component-update" in flags
    managed = browser.launch_args(browser.ChromiumInfo("/x/chrome", "playwright"))
    assert "executable_path" not in managed
