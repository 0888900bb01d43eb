"""The frame journal: :class:`FrameJournal` (the Playwright route shim over the pure frame log).

Kept as the import path of the journal's names; the log lives in
:mod:`harness.frames.log`, the route in :mod:`harness.browser.route`.
"""

from __future__ import annotations

from .browser.route import FrameJournal, Interceptor
from .frames.log import Direction, Frame, FrameLog, ProtocolViolation, normalize_direction

__all__ = ["Direction", "Frame", "FrameJournal", "FrameLog", "Interceptor", "ProtocolViolation", "normalize_direction"]
