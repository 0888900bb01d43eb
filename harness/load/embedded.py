"""The embedded server: the reference server in a process of its own, for a run given no URL.

:func:`start_embedded_server` runs ``python -m reference_server serve`` on
``127.0.0.1`` port 0 (the server binds it and prints the port it got, which
is read back), with its own SQLite file in a temporary folder, and returns an
:class:`EmbeddedServer` (``url``, ``pid``, ``stop()``).

Why a process and not :mod:`harness.serving`'s in-process thread: the
server's RSS per connection is measured by its pid, which must not include
the load generator's memory, and the server must not share the load
generator's interpreter lock, or each would slow the other and the figures
would measure both.  (Tests that need the server in-process, with its
faults, use ``harness.serving`` or their fixtures and pass its URL.)

By default the per-connection rate limit and the caps on unauthenticated
connections are raised (``NOVA_RATE_LIMIT_PER_SECOND``, ``NOVA_RATE_LIMIT_BURST``,
``NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS``, ``NOVA_MAX_UNAUTHENTICATED_TOTAL``):
a load run from one address is what those limits exist to stop, and the run
is meant to measure the server's work, not its refusals.  Pass
``raise_limits=False`` to load the server as deployed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from types import TracebackType
from typing import Self

from .errors import LoadServerError

__all__ = ["RAISED_LIMITS", "EmbeddedServer", "start_embedded_server"]

#: The environment the embedded server gets with ``raise_limits=True``.
RAISED_LIMITS = {
    "NOVA_RATE_LIMIT_PER_SECOND": "1000000000",
    "NOVA_RATE_LIMIT_BURST": "1000000000",
    "NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS": "1000000",
    "NOVA_MAX_UNAUTHENTICATED_TOTAL": "1000000",
}

_LISTENING = re.compile(r"Nova server listening on (http://\S+)")


@dataclass
class EmbeddedServer:
    """A reference server process: ``url`` (``ws://127.0.0.1:PORT``), ``http_url``, ``pid``.

    :meth:`stop` sends SIGTERM (the server closes every WebSocket with 1001),
    waits, kills after the deadline, and removes the temporary folder.  Also a
    context manager.
    """

    http_url: str
    process: subprocess.Popen[str]
    workdir: Path
    output: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    _owns_workdir: bool = False

    @property
    def url(self) -> str:
        """The WebSocket base URL (clients append ``/debug/{client_id}``)."""
        return "ws" + self.http_url[len("http"):]

    @property
    def pid(self) -> int:
        """The server process's id (for its RSS)."""
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and clean up."""
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _pump(stream: object, lines: Queue[str | None], tail: deque[str]) -> None:
    # Reads the server's output for its whole life: a full pipe would block the server.
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        tail.append(line.rstrip("\n"))
        lines.put(line)
    lines.put(None)


def start_embedded_server(
    workdir: str | Path | None = None,
    *,
    raise_limits: bool = True,
    env: dict[str, str] | None = None,
    log_level: str = "warning",
    startup_timeout: float = 20.0,
) -> EmbeddedServer:
    """Start the reference server on ``127.0.0.1`` and an ephemeral port; see the module docstring.

    ``workdir`` holds its database (default: a temporary folder removed at
    ``stop()``); ``env`` adds ``NOVA_*`` settings.  Raises
    :class:`LoadServerError` with the server's last output lines when it
    does not print its address within ``startup_timeout`` seconds.
    """
    owns = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="nova-load-")) if workdir is None else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ)
    if raise_limits:
        environment.update(RAISED_LIMITS)
    environment.update(env or {})
    environment["PYTHONUNBUFFERED"] = "1"
    command = [
        sys.executable, "-m", "reference_server", "serve",
        "--host", "127.0.0.1", "--port", "0", "--frontend-port", "-1",
        "--db", str(folder / "nova-load.db"), "--log-level", log_level,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        stdin=subprocess.DEVNULL,
    )
    tail: deque[str] = deque(maxlen=50)
    lines: Queue[str | None] = Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines, tail), name="nova-load-server-output",
                     daemon=True).start()
    deadline = time.monotonic() + startup_timeout
    http_url = None
    while http_url is None:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(0.0, remaining)) if remaining > 0 else None
        except Empty:
            line = None
        if line is None:
            _give_up(process)
            if owns:
                shutil.rmtree(folder, ignore_errors=True)
            last = "\n".join("  " + t for t in tail) or "  (no output)"
            what = (
                f"exited with status {process.returncode}"
                if process.returncode is not None and remaining > 0
                else f"did not print its address within {startup_timeout:g} s"
            )
            raise LoadServerError(
                f"the embedded reference server ({' '.join(command[1:5])}) {what}; "
                f"its last output:\n{last}"
            )
        match = _LISTENING.search(line)
        if match:
            http_url = match.group(1)
    return EmbeddedServer(http_url, process, folder, tail, _owns_workdir=owns)


def _give_up(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(5)
