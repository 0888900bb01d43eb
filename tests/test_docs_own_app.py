"""Every example of docs/own-app.md runs, against the demo chat app (fixtures/apps/chat).

The document is a newcomer's path from nothing to a green test, so its examples run the
way a newcomer would run them: its ``pytest.ini`` (or ``pyproject.toml``) and test
modules are copied into a fresh project (pytester), ``fixtures`` is linked in as "the
project" (so ``fixtures.apps.chat.app:app`` imports and the schema paths resolve from the
rootdir), and pytest runs in a subprocess with the installed plugin, as in
tests/test_docs_examples.py.  A python block whose first line is ``# path.py`` is
written to that path; other blocks with tests become test modules of their own.

Each run below takes several examples at once, with one way of pointing the harness at
the app: in-process (``--ws-app``), already running behind the fault proxy
(``--ws-base-url``), behind a FaultMiddleware the deployment mounts itself
(``--ws-harness-token``), with URLs that carry no client id, and with a profile of the
project's own.  ``test_every_example_is_run`` keeps the runs and the page in step.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import pytest

from tests.test_docs_examples import ROOT, _blocks

DOC = ROOT / "docs" / "own-app.md"
CHAT_APP = "fixtures.apps.chat.app:app"

#: Seconds for a server process to say where it listens (it binds port 0 first).
START_TIMEOUT_S = 30
#: Seconds for one pytester run of several browser tests.
RUN_TIMEOUT_S = 300


def _fenced(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)


def _one(blocks: list[str], containing: str) -> str:
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"expected one block of docs/own-app.md containing {containing!r}, found {len(found)}"
    return found[0]


def _tests_of(block: str) -> list[str]:
    return re.findall(r"^def (test_\w+)", block, re.MULTILINE)


def _path_of(block: str) -> str | None:
    """The file a block says it is (``# lazy/conftest.py`` on its first line), if any."""
    first = block.split("\n", 1)[0]
    named = re.fullmatch(r"# ([\w./-]+\.py)", first.strip())
    return named.group(1) if named else None


def _main_ini() -> str:
    return _one(_fenced("ini"), "ws_test_ids")


def _ini_with(fragment_key: str) -> str:
    """The page's pytest.ini with the settings of the ini fragment containing ``fragment_key``."""
    fragment = _one(_fenced("ini"), fragment_key)
    settings = re.findall(r"^(\w+)\s*=.*$", fragment, re.MULTILINE)
    lines = _main_ini().splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        key = re.match(r"^(\w+)\s*=", line)
        if key:
            skipping = key.group(1) in settings
        elif not line.startswith((" ", "\t")):
            skipping = False
        if not skipping:
            kept.append(line)
    added = [line for line in fragment.splitlines() if re.match(r"^\w+\s*=", line)]
    return "\n".join([*kept, *added]) + "\n"


@dataclass(frozen=True)
class Run:
    """One pytester run: the document's tests it takes, the files they need, config and server.

    ``config`` is ``"ini"`` (the document's pytest.ini), ``"toml"`` (its pyproject.toml),
    or a string that picks one of its ini fragments, whose settings replace the ini's.
    ``server`` is the app in-process (``--ws-app``), the chat app as a process of its own
    (``--ws-base-url``), or the document's deployment module under uvicorn
    (``--ws-base-url`` and ``--ws-harness-token``).
    """

    id: str
    tests: tuple[str, ...]
    files: tuple[str, ...] = ()
    config: str = "ini"
    server: Literal["ws-app", "chat-process", "deployment"] = "ws-app"
    errors_at_teardown: tuple[str, ...] = ()


FIRST_TESTS = ("test_a_chat_round_trip", "test_publish_through_the_test_ids", "test_ping_pong_in_virtual_time")
SERVER_FAULTS = (
    "test_kicked_by_a_moderator",
    "test_backoff_while_the_server_refuses",
    "test_a_held_handshake_keeps_the_page_connecting",
)
NETWORK_FAULTS = ("test_latency_is_paid_both_ways", "test_a_blackhole_is_silent")

RUNS = [
    Run(
        "in-process: first tests, a lazy page, validation, ws_client",
        (
            *FIRST_TESTS,
            "test_the_socket_opens_on_connect",
            "test_a_bad_frame_fails_at_teardown",
            "test_a_bad_frame_on_purpose",
            "test_the_page_and_a_python_party_chat",
        ),
        files=("lazy/conftest.py",),
        errors_at_teardown=("test_a_bad_frame_fails_at_teardown",),
    ),
    Run(
        "in-process: faults",
        (
            *SERVER_FAULTS,
            "test_the_page_recovers_from_a_server_error",
            *NETWORK_FAULTS,
            "test_a_fault_that_cannot_reach_the_socket_says_so",
        ),
    ),
    Run(
        "running app behind the fault proxy (pyproject.toml)",
        (
            "test_a_chat_round_trip",
            *SERVER_FAULTS,
            *NETWORK_FAULTS,
            "test_a_fault_that_cannot_reach_the_socket_says_so",
        ),
        config="toml",
        server="chat-process",
    ),
    Run(
        "deployment mounting FaultMiddleware",
        SERVER_FAULTS,
        server="deployment",
    ),
    Run(
        "URLs without a client id",
        (
            "test_faults_find_the_page_by_its_cookie",
            *SERVER_FAULTS,
            *NETWORK_FAULTS,
        ),
        config="ws_path = /ws/lobby",
    ),
    Run(
        "a profile of your own",
        ("test_the_profile_s_client_and_error_frame", "test_the_profile_s_validator"),
        files=("chat_profile.py",),
        config="ws_profile =",
    ),
]


def _project(pytester: pytest.Pytester, run: Run) -> list[str]:
    """Write ``run``'s configuration and examples into the pytester project; return its test files."""
    (pytester.path / "fixtures").symlink_to(ROOT / "fixtures", target_is_directory=True)
    if run.config == "toml":
        pytester.makepyprojecttoml(_one(_fenced("toml"), "[tool.pytest.ini_options]"))
    else:
        ini = _main_ini() if run.config == "ini" else _ini_with(run.config)
        (pytester.path / "pytest.ini").write_text(ini, encoding="utf-8")
    blocks = _blocks(DOC)
    wanted = set(run.tests)
    test_files: list[str] = []
    for index, block in enumerate(blocks):
        path, names = _path_of(block), _tests_of(block)
        if names and wanted.intersection(names):
            missing = [n for n in names if n not in wanted]
            assert not missing, f"run {run.id!r} takes part of a block; add {missing} to it"
            target = path or f"test_own_app_{index}.py"
            test_files.append(target)
        elif path in run.files:
            target = path
        else:
            continue
        file = pytester.path / target
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(block, encoding="utf-8")
    return test_files


class _Process:
    """A server process of the test's own; its output (both streams) is read until it prints its URL."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None, pattern: str) -> None:
        self._args = args
        self._pattern = re.compile(pattern)
        self._lines: list[str] = []
        self._printed = threading.Event()
        self.url = ""
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        # Read to the end, so a chatty server never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.append(line.rstrip("\n"))
            found = self._pattern.search(line)
            if found and not self.url:
                self.url = found.group("url")
                self._printed.set()
        self._printed.set()  # it ended without printing its URL: wait_listening says so

    def wait_listening(self) -> str:
        """The URL the process printed, within START_TIMEOUT_S; fails the test with its output otherwise."""
        if not self._printed.wait(START_TIMEOUT_S) or not self.url:
            self.stop()
            output = "\n".join(self._lines[-30:])
            pytest.fail(f"{self._args} printed no {self._pattern.pattern!r} within {START_TIMEOUT_S} s:\n{output}")
        return self.url

    def stop(self) -> None:
        """Terminate it (killed if it does not end within 10 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


@contextmanager
def _server(pytester: pytest.Pytester, run: Run) -> Iterator[list[str]]:
    """The CLI arguments that point the run at its server, started here when it is a process."""
    if run.server == "ws-app":
        yield [f"--ws-app={CHAT_APP}"]
        return
    token: str | None = None
    if run.server == "chat-process":
        # As a team runs its app in another language: a process of its own (fixtures/apps/README.md).
        process = _Process(
            [sys.executable, "-m", "fixtures.apps.chat", "--host", "127.0.0.1", "--port", "0"],
            ROOT, None, r"^listening on (?P<url>http://127\.0\.0\.1:\d+)$",
        )
    else:
        # The page's deployment module, served by uvicorn as section 7 says (port 0: ephemeral).
        deployment = _one(_blocks(DOC), "FaultMiddleware(")
        assert _path_of(deployment) == "chat_deployment.py"
        (pytester.path / "chat_deployment.py").write_text(deployment, encoding="utf-8")
        token = secrets.token_urlsafe(16)
        process = _Process(
            [sys.executable, "-m", "uvicorn", "chat_deployment:app", "--host", "127.0.0.1", "--port", "0"],
            pytester.path, {**os.environ, "HARNESS_TOKEN": token}, r"Uvicorn running on (?P<url>http://127\.0\.0\.1:\d+)",
        )
    try:
        args = [f"--ws-base-url={process.wait_listening()}"]
        yield args if token is None else [*args, f"--ws-harness-token={token}"]
    finally:
        process.stop()


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_examples_pass_against_the_demo_app(run: Run, pytester: pytest.Pytester) -> None:
    test_files = _project(pytester, run)
    with _server(pytester, run) as args:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-p", "no:randomly", *args, *test_files, timeout=RUN_TIMEOUT_S
        )
    result.assert_outcomes(passed=len(run.tests), errors=len(run.errors_at_teardown))
    for name in run.errors_at_teardown:
        result.stdout.fnmatch_lines([f"*ERROR at teardown of {name}*"])
        _shows_the_documented_failure(result.stdout.str())


def _shows_the_documented_failure(output: str) -> None:
    """The page's ``text`` block of the teardown failure is what pytest prints (``E   `` lines)."""
    shown = _one(_fenced("text"), "violated the protocol").strip().splitlines()[1:]
    printed = [line.removeprefix("E   ") for line in output.splitlines()]
    for line in shown:
        assert any(p.strip() == line.strip() for p in printed), (
            f"docs/own-app.md shows {line.strip()!r} in the teardown failure, which pytest did not print:\n{output}"
        )


def test_every_example_is_run() -> None:
    """Each test and each named file of the page belongs to a run; each run names real ones."""
    blocks = _blocks(DOC)
    documented = {name for block in blocks for name in _tests_of(block)}
    run_tests = {name for run in RUNS for name in run.tests}
    assert documented - run_tests == set(), "examples of docs/own-app.md that no run takes"
    assert run_tests - documented == set(), "runs name tests docs/own-app.md does not have"
    named = {_path_of(b) for b in blocks if _path_of(b) and not _tests_of(b)}
    used = {f for run in RUNS for f in run.files} | {"chat_deployment.py"}
    assert named == used, "files named in docs/own-app.md and the ones the runs write differ"
    for run in RUNS:
        assert set(run.errors_at_teardown) <= set(run.tests)
