"""Failure artifacts: the frame journal, the client's status history and its server log lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .helper import WebSocketTestHelper

__all__ = ["write_failure_artifacts"]


def write_failure_artifacts(helper: WebSocketTestHelper, out_dir: Path) -> dict[str, Path]:
    """Write what explains a failure into ``out_dir``; return ``{kind: path}``.

    Never raises: an artifact that cannot be produced (the page is gone, the
    server is external) is skipped, so the test's own failure stays the report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    try:
        paths["frames"] = helper.journal.write_jsonl(out_dir / "nova-ws-frames.jsonl")
    except OSError:
        pass
    try:
        state = helper.state()
        target = out_dir / "nova-ws-status-history.json"
        target.write_text(
            json.dumps({"client_id": helper.client_id, "state": state}, indent=2, default=str),
            encoding="utf-8",
        )
        paths["status_history"] = target
    except Exception:  # noqa: BLE001, S110 - the page may be closed or not the Nova client
        pass
    lines = helper.server.log_lines(helper.client_id)
    if lines:
        target = out_dir / "nova-ws-server.log"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths["server_log"] = target
    return paths
