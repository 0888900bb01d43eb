"""Loading the protocol message corpus in ``fixtures/messages`` (format: its README.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["CORPUS_DIR", "Case", "load_corpus"]

CORPUS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "messages"


@dataclass(frozen=True)
class Case:
    """One corpus case; ``text`` is what goes on the wire as a text frame."""

    path: Path
    description: str
    direction: Literal["client", "server"]
    frame: Any
    raw: str | None
    expected_valid: bool
    mentions: str | None

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"

    @property
    def text(self) -> str:
        return self.raw if self.raw is not None else json.dumps(self.frame, ensure_ascii=False)

    @property
    def parse_input(self) -> Any:
        """What to hand to ``parse_*``: the raw text, or the decoded frame."""
        return self.raw if self.raw is not None else self.frame


def _load(path: Path) -> Case:
    data = json.loads(path.read_text(encoding="utf-8"))
    where = f"{path.relative_to(CORPUS_DIR.parent.parent)}"
    allowed = {"description", "direction", "frame", "raw", "expected"}
    if set(data) - allowed:
        raise ValueError(f"{where}: unknown keys {sorted(set(data) - allowed)}; allowed: {sorted(allowed)}")
    if ("frame" in data) == ("raw" in data):
        raise ValueError(f"{where}: give exactly one of 'frame' or 'raw'")
    if data.get("direction") not in ("client", "server"):
        raise ValueError(f"{where}: direction must be 'client' or 'server', got {data.get('direction')!r}")
    if not isinstance(data.get("description"), str) or not data["description"]:
        raise ValueError(f"{where}: a non-empty 'description' is required")
    expected = data.get("expected")
    if expected == "valid":
        valid, mentions = True, None
    elif (
        isinstance(expected, dict)
        and expected.get("error") == "invalid_message"
        and isinstance(expected.get("mentions"), str)
        and set(expected) == {"error", "mentions"}
    ):
        valid, mentions = False, expected["mentions"]
    else:
        raise ValueError(
            f"{where}: expected must be \"valid\" or "
            f"{{\"error\": \"invalid_message\", \"mentions\": str}}, got {expected!r}"
        )
    if valid != (path.parent.name == "valid"):
        raise ValueError(f"{where}: a {'valid' if valid else 'invalid'} case in {path.parent.name}/")
    if not path.stem.startswith(f"{data['direction']}-"):
        raise ValueError(f"{where}: the file name must start with '{data['direction']}-'")
    raw = data.get("raw")
    if raw is not None and not isinstance(raw, str):
        raise ValueError(f"{where}: 'raw' must be a string")
    return Case(path, data["description"], data["direction"], data.get("frame"), raw, valid, mentions)


def load_corpus(kind: Literal["valid", "invalid"] | None = None) -> list[Case]:
    """Every case (or those under ``valid/`` or ``invalid/``), sorted by path; malformed files raise."""
    kinds = ("valid", "invalid") if kind is None else (kind,)
    cases = [_load(p) for k in kinds for p in sorted((CORPUS_DIR / k).glob("*.json"))]
    if not cases:
        raise FileNotFoundError(f"no corpus cases under {CORPUS_DIR}; is the checkout complete?")
    return cases
