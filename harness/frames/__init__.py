"""Pure frame handling: the frame log (history, consume-once waits, validation hooks)."""

from __future__ import annotations

from .log import Direction, Frame, FrameLog, FrameValidator, ProtocolViolation, normalize_direction

__all__ = ["Direction", "Frame", "FrameLog", "FrameValidator", "ProtocolViolation", "normalize_direction"]
