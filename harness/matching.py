"""Pure frame matching and description, shared by the journal and the protocol client."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Match", "describe_frames", "frame_matches", "subset_matches"]

#: A ``match`` argument: a dict compared as a subset of the message's ``data``,
#: or a predicate on the whole message.
Match = Mapping[str, Any] | Callable[[dict[str, Any]], bool]


def subset_matches(expected: Any, actual: Any) -> bool:
    """True when ``expected`` is contained in ``actual`` (dicts as subsets, the rest by equality)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(k in actual and subset_matches(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


def frame_matches(message: Mapping[str, Any], *, type: str | None = None, match: Match | None = None) -> bool:
    """Whether ``message`` has ``type`` (when given) and satisfies ``match`` (when given)."""
    if type is not None and message.get("type") != type:
        return False
    if match is None:
        return True
    if callable(match):
        return bool(match(dict(message)))
    return subset_matches(match, message.get("data"))


def describe_frames(messages: Sequence[Mapping[str, Any]], *, limit: int = 20, width: int = 200) -> str:
    """A readable listing of the last ``limit`` messages, one per line."""
    if not messages:
        return "  (none)"
    shown = list(messages)[-limit:]
    lines = []
    if len(messages) > limit:
        lines.append(f"  ... {len(messages) - limit} earlier frames not shown")
    for m in shown:
        text = json.dumps(m, default=str)
        lines.append("  " + (text if len(text) <= width else text[: width - 3] + "..."))
    return "\n".join(lines)
