"""The plugin at the app seam, as a consumer project sees it: one pytester subprocess run per behaviour.

Start-up errors stop the run once; directories of one session get a server
per configuration; the browser extra is named when it is missing; ``--help``
lists every setting; an unrelated run imports none of the heavy modules.
"""

from __future__ import annotations

import json
import re

import pytest

from harness.config import SETTINGS

#: Seconds one pytester run may take before it is killed.
RUN_TIMEOUT = 60


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args, timeout=RUN_TIMEOUT)


def test_a_bad_ini_setting_stops_the_run_once_at_start_up(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nws_type_key = a..b\n")
    pytester.makepyfile("def test_a(ws_config):\n    pass\n\ndef test_b():\n    pass\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count("ws_type_key must be a key or a dotted path") == 1, output
    assert "'a..b'" in output
    assert "test_a" not in output and "passed" not in output  # nothing ran


_WHO_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def who(request):
    return PlainTextResponse({name!r})


app = Starlette(routes=[Route("/who", who)])
"""

_DIRECTORY_CONFTEST = """
import pytest


@pytest.fixture(scope="session")
def ws_config(ws_config):
    return ws_config.replace(app={app!r})
"""

_DIRECTORY_TEST = """
import urllib.request


def test_{name}_sees_its_own_app(ws_server, ws_config):
    assert ws_server.config == ws_config
    assert ws_server.config.app == {app!r}
    assert ws_server.kind == "app"
    with urllib.request.urlopen(ws_server.http_url + "/who", timeout=5) as answer:
        assert answer.read().decode() == {name!r}
    print("SERVER", {name!r}, ws_server.http_url)
"""


def test_directories_overriding_ws_config_for_two_apps_get_two_servers(pytester: pytest.Pytester) -> None:
    for name in ("one", "two"):
        app = f"app_{name}:app"
        pytester.makepyfile(**{f"app_{name}": _WHO_APP.format(name=name)})
        directory = pytester.mkpydir(f"suite_{name}")
        (directory / "conftest.py").write_text(_DIRECTORY_CONFTEST.format(app=app), encoding="utf-8")
        (directory / f"test_{name}.py").write_text(
            _DIRECTORY_TEST.format(name=name, app=app), encoding="utf-8"
        )
    result = _run(pytester, "-s", "suite_one", "suite_two")
    result.assert_outcomes(passed=2)
    servers = dict(re.findall(r"SERVER (\w+) (\S+)", result.stdout.str()))
    assert set(servers) == {"one", "two"} and servers["one"] != servers["two"], servers


def test_ws_helper_without_the_browser_extra_names_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_page(ws_helper):\n    pass\n")
    result = _run(pytester, "-p", "no:playwright")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "pip install 'nova-ws-harness[browser]'" in out
    assert "fixture 'context' not found" not in out


def test_help_lists_every_setting_with_names_that_exist(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--help")
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    envs = {s.env for s in SETTINGS}
    for setting in SETTINGS:
        assert setting.option in out, setting.option
        assert re.search(rf"^\s+{setting.ini} \(", out, re.MULTILINE), setting.ini
        assert setting.env in out, setting.env
    named = set(re.findall(r"NOVA_WS_[A-Z_]+", out))
    assert named <= envs, sorted(named - envs)
    assert "NOVA_WS_WS_PATH" not in out
    metavar = re.search(r"--ws-path[= ](\S+)", out)
    assert metavar is not None
    assert not metavar.group(1).startswith("NOVA_WS_") or metavar.group(1) in envs, metavar.group(1)


#: Modules an unrelated run must not pay for.
HEAVY = ["httpx", "websockets", "harness.proxy", "harness.helper", "harness.faults", "reference_server"]

_REPORT_MODULES = f"""
import json
import sys


def pytest_sessionfinish(session):
    loaded = [name for name in {HEAVY!r} if name in sys.modules]
    print("\\nMODULES " + json.dumps({{"plugin": "harness.plugin" in sys.modules, "heavy": loaded}}))
"""


def test_an_unrelated_run_imports_none_of_the_heavy_modules(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_REPORT_MODULES)
    pytester.makepyfile("def test_arithmetic():\n    assert 1 + 1 == 2\n")
    result = _run(pytester, "-s")
    result.assert_outcomes(passed=1)
    found = re.search(r"^MODULES (.+)$", result.stdout.str(), re.MULTILINE)
    assert found is not None, result.stdout.str()
    report = json.loads(found.group(1))
    assert report["plugin"], "the nova_ws plugin was not loaded: the check would prove nothing"
    assert report["heavy"] == []
