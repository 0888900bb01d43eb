"""``nova-ws load``: exit statuses, bad input, the summary, the files written in every case, the progress line.

Runs are small and short (a second or less of load) against the embedded
reference server, or against the bare websockets servers of conftest.py on
127.0.0.1 ports bound first.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from harness.load import SCENARIOS
from harness.load.cli import EXIT_ABORTED, EXIT_BAD_INPUT, EXIT_PASSED, EXIT_THRESHOLD_FAILED, main
from harness.load.engine import Progress
from harness.load.progress import ProgressLine, format_progress, should_show
from harness.load.thresholds import GRAMMAR

from .conftest import WsApp

ROOT = Path(__file__).resolve().parents[3]
SHORT = ["--duration", "0.5", "--quiet"]


def _outputs(tmp_path: Path) -> list[str]:
    return ["--json", str(tmp_path / "run.json"), "--csv", str(tmp_path / "run.csv"),
            "--html", str(tmp_path / "run.html")]


def _json(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    return data


def _tags(html: str) -> list[str]:
    tags: list[str] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)

    Collector().feed(html)
    return tags


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# ----------------------------------------------------------------- runs that end


def test_fanout_on_the_embedded_server_passes_and_writes_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["fanout", "--clients", "3", "--rate", "20", *SHORT, "--threshold", "lost==0", *_outputs(tmp_path)])
    out = capsys.readouterr().out
    assert code == EXIT_PASSED, out
    data = _json(tmp_path)
    assert data["passed"] and data["aborted"] is None
    assert data["steps"][0]["counters"]["delivered"] > 0 and data["steps"][0]["counters"]["lost"] == 0
    assert (tmp_path / "run.csv").exists() and (tmp_path / "run_timeline.csv").exists()
    assert _tags((tmp_path / "run.html").read_text(encoding="utf-8")).count("svg") == 2
    assert "(embedded reference server)" in out
    assert "ok   lost==0" in out
    assert _last_line(out).startswith("where it breaks: nothing broke at this load")


def test_a_failed_threshold_exits_1_and_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ws_app: Callable[..., WsApp]
) -> None:
    app = ws_app()
    code = main(["publish", "--profile", "generic", "--url", app.url, "--rate", "50", *SHORT,
                 "--threshold", "p99<1us", "--threshold", "errors<1%", *_outputs(tmp_path)])
    out = capsys.readouterr().out
    assert code == EXIT_THRESHOLD_FAILED, out
    assert [t["passed"] for t in _json(tmp_path)["thresholds"]] == [False, True]
    assert "FAIL p99<1us" in out
    assert _last_line(out).startswith("where it breaks: threshold failed: p99<1us: FAILED, publish p99 was")


def test_the_generic_profile_loads_a_bare_echo_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ws_app: Callable[..., WsApp]
) -> None:
    app = ws_app()
    code = main(["publish", "--profile", "generic", "--url", app.url, "--clients", "2", "--rate", "100", *SHORT,
                 *_outputs(tmp_path)])
    assert code == EXIT_PASSED, capsys.readouterr().out
    data = _json(tmp_path)
    assert data["profile"] == "generic" and data["url"] == app.url
    assert data["steps"][0]["counters"]["confirmed"] > 0


def test_a_ramp_reports_its_knee(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ws_app: Callable[..., WsApp]
) -> None:
    app = ws_app()
    code = main(["ramp", "--ramp", "publish:rate=20,40", "--profile", "generic", "--url", app.url,
                 "--duration", "0.3", "--quiet", "--knee-p99", "1us", "--all-steps", *_outputs(tmp_path)])
    out = capsys.readouterr().out
    assert code == EXIT_PASSED, out  # a knee is a finding, not a failure: thresholds fail runs
    data = _json(tmp_path)
    assert [s["parameters"]["rate"] for s in data["steps"]] == [20.0, 40.0]
    assert data["knee"] == 0
    assert "step 0 rate=20: " in out and "<- knee: publish p99" in out
    assert "where it breaks: knee at step 0 (rate=20): publish p99" in _last_line(out)
    html = (tmp_path / "run.html").read_text(encoding="utf-8")
    assert 'class="knee"' in html


def test_a_rate_the_machine_cannot_produce_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ws_app: Callable[..., WsApp]
) -> None:
    app = ws_app()
    code = main(["publish", "--profile", "generic", "--url", app.url, "--rate", "5000000", *SHORT,
                 *_outputs(tmp_path)])
    out = capsys.readouterr().out
    assert code == EXIT_PASSED, out
    step = _json(tmp_path)["steps"][0]
    assert step["achieved_rate"] < 0.5 * step["offered_rate"]
    assert re.search(r"offered 5,000,000/s, achieved [0-9,]+/s \([0-9]+%\)", out)
    assert "offered 5,000,000/s" in _last_line(out)


# ----------------------------------------------------------------- aborted runs: exit 3, figures written


def test_an_unreachable_port_aborts_with_3_and_still_writes_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], refused_url: str
) -> None:
    code = main(["publish", "--url", refused_url, *SHORT, *_outputs(tmp_path)])
    captured = capsys.readouterr()
    assert code == EXIT_ABORTED, captured.out
    data = _json(tmp_path)
    assert "connect:refused" in data["aborted"] and data["passed"] is False
    assert data["steps"][0]["errors"] == {"connect:refused": 1}
    assert "ABORTED" in (tmp_path / "run.html").read_text(encoding="utf-8")
    assert (tmp_path / "run.csv").exists()
    assert "aborted: no client could connect" in captured.err
    assert _last_line(captured.out).startswith("where it breaks: the run was aborted: no client could connect")


def _forbid(connection: ServerConnection, request: Request) -> Response:
    return connection.respond(403, "no load here\n")


def test_a_rejected_handshake_aborts_with_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ws_app: Callable[..., WsApp]
) -> None:
    app = ws_app(process_request=_forbid)
    code = main(["publish", "--profile", "generic", "--url", app.url, *SHORT, *_outputs(tmp_path)])
    assert code == EXIT_ABORTED
    assert "handshake:403" in _json(tmp_path)["aborted"]
    assert "handshake:403" in capsys.readouterr().out


async def _close_soon(ws: ServerConnection) -> None:
    # Echo until the client starts publishing, then close with 1011 (internal error).
    async for message in ws:
        await ws.send(message)
        await ws.close(1011, "going down")


def test_a_server_closing_every_connection_mid_run_aborts_with_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ws_app: Callable[..., WsApp]
) -> None:
    app = ws_app(_close_soon)
    code = main(["publish", "--profile", "generic", "--url", app.url, "--clients", "2", "--rate", "20",
                 "--duration", "5", "--quiet", *_outputs(tmp_path)])
    out = capsys.readouterr().out
    assert code == EXIT_ABORTED, out
    data = _json(tmp_path)
    assert "every connection was closed" in data["aborted"]
    assert data["steps"][0]["errors"]["close:1011"] == 2
    assert data["steps"][0]["duration"] < 4  # ended early, not after the 5 s asked for
    assert "close:1011 (internal server error) x2" in out


# ----------------------------------------------------------------- bad input: exit 2


def test_an_unknown_scenario_exits_2_naming_the_known_ones_and_a_close_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["fanuot", *_outputs(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "unknown scenario 'fanuot'; did you mean 'fanout'?" in err
    for name in [*SCENARIOS, "ramp"]:
        assert name in err
    data = _json(tmp_path)  # written anyway: a run with no step saying what was wrong
    assert data["steps"] == [] and data["aborted"].startswith("bad input: unknown scenario")
    assert (tmp_path / "run.html").exists()


def test_reconnect_storm_reset_via_proxy_says_how_many_drops_the_proxy_reset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["reconnect-storm", "--subscribers", "6", "--drop-share", "1", "--drops-per-client", "2",
                 "--rate", "50", "--reconnect-delay", "20ms", "--duration", "1", "--quiet", "--reset-via-proxy",
                 "--threshold", "lost==0", "--threshold", "duplicated==0", "--json", str(tmp_path / "run.json")])
    out = capsys.readouterr().out
    assert code == EXIT_PASSED, out
    step = _json(tmp_path)["steps"][0]
    drops = step["counters"]["drops"]
    assert drops >= 6
    assert step["gauges"]["proxy_resets"] == drops
    assert f"reset at the fault proxy {drops}" in out


def test_a_bad_threshold_exits_2_naming_the_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "--threshold", "p99<<5"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "bad threshold 'p99<<5'" in err and GRAMMAR in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["publish", "--url", "ftp://127.0.0.1:21"], "expected a ws://, wss://, http:// or https:// URL"),
        (["publish", "--url", "ws://192.0.2.1:8000"], "--allow-remote"),
        (["publish", "--drop-share", "0.5"], "--drop-share does not apply to publish; it applies to reconnect-storm"),
        (["publish", "--clients", "many"], "argument --clients: invalid int value: 'many'"),
        (["publish", "--rate", "-5"], "rate must be > 0"),
        (["fanout", "--profile", "generic"], "use the nova profile"),
        (["publish", "--profile", "generic", "--api-key", "k"], "--api-key applies to the nova profile"),
        (["ramp"], "the ramp scenario needs --ramp SCENARIO:[PARAMETER=]VALUES"),
        (["ramp", "--ramp", "publish:rate=100..50*2"], "bad ramp values"),
        (["ramp", "--ramp", "pubish:rate=10,20"], "did you mean 'publish'?"),
        (["ramp", "--ramp", "publish:volume=10,20"], "publish has no parameter 'volume'"),
        (["publish", "--ramp", "rate=10,20"], "--ramp belongs to the ramp scenario: nova-ws load ramp --ramp publish:rate=10,20"),
        (["fanout", "--clients", "3", "--subscribers", "4"], "give --clients or --subscribers, not both"),
        (["publish", "--knee-p99", "20ms"], "--knee-p99 judge the steps of a ramp; publish is one run"),
        (["publish", "--duration", "soon"], "expected a duration like 100ms"),
        (["publish", "--reset-via-proxy"], "reconnect-storm drops; publish drops none"),
        (["reconnect-storm", "--reset-via-proxy", "--url", "wss://127.0.0.1:9"],
         "--reset-via-proxy) needs a ws:// server URL"),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_the_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--quiet"]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------- help


def test_help_documents_every_scenario_the_thresholds_and_the_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, cls in SCENARIOS.items():
        assert f" {name} " in text
        # The scenario's own docstring, so the help cannot drift from the code.
        first = " ".join((cls.__doc__ or "").split("\n\n")[0].split()).replace("``", "")
        assert first.removeprefix(f"{name}: ") in text
        for f in fields(cls):
            if f.name not in ("protocol", "tag"):
                assert "--" + f.name.replace("_", "-") in text
    assert " ".join(GRAMMAR.split()) in text
    assert "--ramp SCENARIO:[PARAMETER=]VALUES" in text
    for line in ("0 passed", "1 a threshold failed", "2 bad input", "3 aborted"):
        assert line in text


# ----------------------------------------------------------------- nova-ws load, as a command


def test_nova_ws_load_runs_as_a_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    out = subprocess.run(
        [sys.executable, "-m", "reference_server", "load", "fanout", "--clients", "2", "--rate", "10",
         "--duration", "0.5", "--json", str(tmp_path / "run.json")],
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert _json(tmp_path)["passed"] is True
    assert "\x1b[" not in out.stdout  # not a terminal: no live line, only the summary
    assert _last_line(out.stdout).startswith("where it breaks:")


# ----------------------------------------------------------------- the progress line


def _progress(**changes: Any) -> Progress:
    values: dict[str, Any] = {
        "step": 0, "steps": 1, "phase": "running", "elapsed": 3.0, "duration": 10.0, "clients": 4, "ready": 4,
        "open": 4, "sent": 400, "received": 390, "errors": 2, "p99_us": 2100,
    }
    values.update(changes)
    return Progress(**values)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_is_shown_on_a_terminal_only_and_not_under_ci_or_quiet() -> None:
    assert should_show(_Tty(), env={})
    assert not should_show(io.StringIO(), env={})
    assert not should_show(_Tty(), env={"CI": "true"})
    assert should_show(_Tty(), env={"CI": "false"})
    assert not should_show(_Tty(), quiet=True, env={})


def test_the_line_shows_elapsed_clients_rates_p99_and_errors() -> None:
    line = ProgressLine(enabled=False, label="publish")
    line.text(_progress())
    text = line.text(_progress(elapsed=4.0, sent=600, received=590, errors=3, p99_us=2500))
    assert text == "publish running 4/10 s | 4/4 open | sent 200/s recv 200/s | p99 2.50 ms | errors 3"
    assert "step 2/3" in format_progress(_progress(step=1, steps=3))


def test_the_line_is_drawn_live_and_cleared_for_the_summary() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=200)
    with ProgressLine(enabled=True, label="fanout", console=console) as line:
        line(_progress())
        line(_progress(elapsed=4.0, sent=500))
    drawn = stream.getvalue()
    assert "fanout running 4/10 s | 4/4 open | sent 100/s" in drawn
    assert drawn.endswith("\x1b[2K") or "\x1b[1A" in drawn  # erased: the summary takes its place


def test_a_disabled_line_writes_nothing() -> None:
    stream = io.StringIO()
    line = ProgressLine(enabled=False, console=Console(file=stream, force_terminal=True))
    line(_progress())
    line.close()
    assert stream.getvalue() == "" and line.last is None


def test_python_m_harness_load_is_the_same_command() -> None:
    """``python -m harness load`` runs ``nova-ws load`` (bad input: exit 2, the known scenarios named)."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "load", "fanuot"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert "fanout" in proc.stderr + proc.stdout
