"""``python -m harness ensure-browser`` (the set-up step), ``... find-browser`` and ``... load`` (``nova-ws load``)."""

from __future__ import annotations

import subprocess
import sys

from .browser import ensure_chromium, find_chromium
from .errors import BrowserNotFoundError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        from .load.cli import main as load_main

        return load_main(argv[1:])
    command = argv[0] if argv else "find-browser"
    if command not in {"ensure-browser", "find-browser"}:
        print(f"usage: python -m harness ensure-browser|find-browser|load ... (got {command!r})", file=sys.stderr)
        return 2
    try:
        info = ensure_chromium() if command == "ensure-browser" else find_chromium()
    except BrowserNotFoundError as exc:
        print(f"nova-ws: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"nova-ws: installing chromium failed ({exc}); {BrowserNotFoundError.none_found()}", file=sys.stderr)
        return 1
    print(f"Chromium: {info.path} ({info.source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
