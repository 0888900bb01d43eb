"""The live progress line of ``nova-ws load``: one line on a terminal, nothing elsewhere.

:class:`ProgressLine` is the engine's ``on_progress`` callback (called about
once a second with a :class:`~harness.load.engine.Progress`): it redraws one
line with ``rich`` (elapsed time, clients open, messages per second, the
primary latency's p99 so far, errors) and clears it when closed, so the final
summary takes its place.  It stays silent (:func:`should_show`) when the
stream is not a terminal, when ``CI`` is set, or when asked to be quiet: logs
of CI runs get the final summary only.

:func:`format_progress` is the line as plain text (pure, for tests and for
anyone drawing it elsewhere).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

__all__ = ["ProgressLine", "ProgressSnapshot", "format_progress", "should_show"]


class ProgressSnapshot(Protocol):
    """What the line shows: the fields of :class:`harness.load.engine.Progress` it reads."""

    @property
    def step(self) -> int: ...
    @property
    def steps(self) -> int | None: ...
    @property
    def phase(self) -> str: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def clients(self) -> int: ...
    @property
    def open(self) -> int: ...
    @property
    def sent(self) -> int: ...
    @property
    def received(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def p99_us(self) -> int: ...


def _ci(env: Mapping[str, str]) -> bool:
    value = env.get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def should_show(stream: TextIO | None = None, *, quiet: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """Whether a live line belongs on ``stream`` (stdout): a terminal, ``CI`` unset, not ``quiet``."""
    if quiet or _ci(os.environ if env is None else env):
        return False
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_progress(
    progress: ProgressSnapshot, *, sent_per_s: float | None = None, received_per_s: float | None = None,
    label: str = "",
) -> str:
    """One line: ``publish step 1/3 running 3.0/10 s | 4/4 open | sent 400/s recv 400/s | p99 2.10 ms | errors 0``.

    Rates are None until two snapshots of the same phase give a difference.
    """
    head = [label] if label else []
    if progress.steps and progress.steps > 1:
        head.append(f"step {progress.step + 1}/{progress.steps}")
    if progress.phase == "running" and progress.duration != float("inf"):
        head.append(f"running {progress.elapsed:.0f}/{progress.duration:g} s")
    else:
        head.append(f"{progress.phase} {progress.elapsed:.0f} s")
    rates = []
    if sent_per_s is not None:
        rates.append(f"sent {sent_per_s:,.0f}/s")
    if received_per_s is not None:
        rates.append(f"recv {received_per_s:,.0f}/s")
    parts = [
        " ".join(head),
        f"{progress.open}/{progress.clients} open",
        " ".join(rates) or f"sent {progress.sent:,} recv {progress.received:,}",
        f"p99 {progress.p99_us / 1000:.2f} ms" if progress.p99_us else "p99 -",
        f"errors {progress.errors:,}",
    ]
    return " | ".join(parts)


def _text(line: str) -> Text:
    from rich.text import Text

    # One line whatever the terminal's width: cut, never wrapped (a wrapped line redraws badly).
    return Text(line, no_wrap=True, overflow="ellipsis")


class ProgressLine:
    """The engine's ``on_progress`` callback drawing a live line (see the module docstring).

    ``enabled`` False makes every call a no-op.  Use as a context manager,
    or call :meth:`close` before printing anything else.
    """

    def __init__(self, *, enabled: bool, label: str = "", console: Console | None = None) -> None:
        self.enabled = enabled
        self.label = label
        self.last: str | None = None
        self._console = console
        self._live: Live | None = None
        self._previous: tuple[int, str, float, int, int] | None = None

    @classmethod
    def for_stdout(cls, *, quiet: bool = False, label: str = "") -> ProgressLine:
        """A line on stdout, enabled per :func:`should_show`."""
        return cls(enabled=should_show(sys.stdout, quiet=quiet), label=label)

    def text(self, progress: ProgressSnapshot) -> str:
        """The line for ``progress``, with rates from the previous snapshot of the same step and phase."""
        key = (progress.step, progress.phase)
        sent_rate = received_rate = None
        previous = self._previous
        if previous is not None and previous[:2] == key and progress.elapsed > previous[2]:
            span = progress.elapsed - previous[2]
            sent_rate = max(0, progress.sent - previous[3]) / span
            received_rate = max(0, progress.received - previous[4]) / span
        self._previous = (*key, progress.elapsed, progress.sent, progress.received)
        return format_progress(progress, sent_per_s=sent_rate, received_per_s=received_rate, label=self.label)

    def __call__(self, progress: ProgressSnapshot) -> None:
        """Redraw the line (no-op when disabled)."""
        if not self.enabled:
            return
        line = self.text(progress)
        self.last = line
        live = self._live
        if live is None:
            from rich.console import Console
            from rich.live import Live

            console = self._console or Console()
            live = self._live = Live(_text(line), console=console, transient=True, auto_refresh=False)
            live.start()
        else:
            live.update(_text(line), refresh=True)

    def close(self) -> None:
        """Clear the line (what follows is printed in its place)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
