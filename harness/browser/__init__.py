"""Browser-side pieces: Chromium launch, the journal's Playwright route, the socket log, status drivers."""

from __future__ import annotations

from .launch import ChromiumInfo, ensure_chromium, find_chromium, launch_args

__all__ = ["ChromiumInfo", "ensure_chromium", "find_chromium", "launch_args"]
