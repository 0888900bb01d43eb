"""Server errors fail the test: an ERROR the server under test logs for the test's client fails it at teardown."""

from __future__ import annotations

import pytest

_APP = '''
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute

PAGE = """<!doctype html><div data-testid="status">connecting</div><script>
const id = new URLSearchParams(location.search).get("client");
const ws = new WebSocket(`ws://${location.host}/ws/${id}`);
ws.onopen = () => { document.querySelector("[data-testid=status]").textContent = "connected"; };
</script>"""


async def page(request):
    return HTMLResponse(PAGE)


async def socket(websocket):
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        if text == "boom":
            raise RuntimeError("the handler broke on " + websocket.path_params["client_id"])
        await websocket.send_text(text)


app = Starlette(routes=[Route("/", page), WebSocketRoute("/ws/{client_id}", socket)])
'''

_TESTS = '''
import pytest


def test_an_app_that_breaks_fails_the_test(ws_helper):
    ws_helper.faults.inject("boom", direction="to_server")
    ws_helper.wait_for_socket_closed()


@pytest.mark.ws_allow_server_errors
def test_the_marker_lets_a_test_provoke_errors(ws_helper):
    ws_helper.faults.inject("boom", direction="to_server")
    ws_helper.wait_for_socket_closed()
    assert ws_helper.server_errors()  # still recorded


def test_a_quiet_test_passes(ws_helper):
    ws_helper.faults.inject("echo", direction="to_server")
    assert ws_helper.expect_frame(text="echo") == "echo"
'''


def test_server_errors_fail_the_test_at_teardown_unless_marked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(breaking_app=_APP, test_errors=_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly",
        "--ws-app=breaking_app:app", "--ws-path=/ws/{client_id}", "--ws-page-path=/?client={client_id}",
        timeout=120,
    )  # fmt: skip
    result.assert_outcomes(passed=3, errors=1)
    output = result.stdout.str()
    assert "ERROR at teardown of test_an_app_that_breaks_fails_the_test" in output
    assert "the server under test logged" in output
    assert "the handler broke on t-" in output  # the record itself, with its traceback
    assert "ws_allow_server_errors" in output  # the way out is named
