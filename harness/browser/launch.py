"""Finding a Chromium to drive, and the flags it needs on this kind of machine.

Order: ``NOVA_WS_CHROMIUM`` (an explicit path) > Playwright's own Chromium
(``playwright install chromium``) > a system Chromium (``/usr/bin/chromium``
and the usual names on ``PATH``).  With none, :class:`BrowserNotFoundError`
names both fixes.

``python -m harness ensure-browser`` is the set-up step ``make test`` runs:
it succeeds when a Chromium is found, installs Debian's ``chromium`` with
apt when none is and it runs as root, and otherwise fails with the same
message.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import BrowserNotFoundError

__all__ = [
    "CHROMIUM_FLAGS",
    "SYSTEM_CHROMIUM_NAMES",
    "ChromiumInfo",
    "ensure_chromium",
    "find_chromium",
    "launch_args",
]

#: Executable names tried on ``PATH`` and in /usr/bin, in order.
SYSTEM_CHROMIUM_NAMES: tuple[str, ...] = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
)

#: Flags every launch gets: no background traffic to hosts this machine cannot reach.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
)

Source = Literal["env", "playwright", "system"]


@dataclass(frozen=True)
class ChromiumInfo:
    """A Chromium found on this machine: its path and where it came from."""

    path: str | None
    source: Source

    @property
    def is_playwright_managed(self) -> bool:
        return self.source == "playwright"


def _playwright_chromium() -> str | None:
    roots = [os.environ.get("PLAYWRIGHT_BROWSERS_PATH", ""), str(Path.home() / ".cache" / "ms-playwright")]
    for root in roots:
        if not root or root == "0":
            continue
        for pattern in ("chromium-*/chrome-linux*/chrome", "chromium_headless_shell-*/chrome-linux*/headless_shell"):
            hits = sorted(glob.glob(os.path.join(root, pattern)), reverse=True)
            for hit in hits:
                if os.access(hit, os.X_OK):
                    return hit
    return None


def _system_chromium() -> str | None:
    for name in SYSTEM_CHROMIUM_NAMES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


def find_chromium() -> ChromiumInfo:
    """Locate a Chromium; raise :class:`BrowserNotFoundError` naming the fixes when none exists."""
    explicit = os.environ.get("NOVA_WS_CHROMIUM")
    if explicit:
        if os.access(explicit, os.X_OK):
            return ChromiumInfo(explicit, "env")
        raise BrowserNotFoundError(
            f"NOVA_WS_CHROMIUM={explicit!r} is not an executable file; "
            "point it at a Chromium binary or unset it to search the usual places"
        )
    managed = _playwright_chromium()
    if managed:
        return ChromiumInfo(managed, "playwright")
    system = _system_chromium()
    if system:
        return ChromiumInfo(system, "system")
    raise BrowserNotFoundError.none_found()


def launch_args(info: ChromiumInfo | None = None, *, headless: bool = True) -> dict[str, object]:
    """Keyword arguments for ``browser_type.launch`` that work here (root, no network)."""
    info = info or find_chromium()
    args = list(CHROMIUM_FLAGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    result: dict[str, object] = {"args": args, "headless": headless}
    if not info.is_playwright_managed and info.path:
        result["executable_path"] = info.path
    return result


def ensure_chromium() -> ChromiumInfo:
    """Find a Chromium, installing Debian's package with apt when none exists and we are root."""
    try:
        return find_chromium()
    except BrowserNotFoundError:
        if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
            raise
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("nova-ws: no Chromium found; installing Debian's chromium with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return find_chromium()
