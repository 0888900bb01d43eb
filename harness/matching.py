"""Pure frame typing, matching and description, shared by the journal and the protocol clients.

A frame is typed by a key of its JSON object (``type`` by default; a dotted
path such as ``meta.kind`` reaches into nested objects).  ``match`` is a dict
compared as a subset (of the whole frame, or of one field of it: the Nova
profile compares against ``data``) or a predicate on the parsed frame;
``text`` matches a frame's text, JSON or not: a string (equal), a compiled
regex (``search``) or a predicate on the raw payload (``str`` or ``bytes``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "Match",
    "TextMatch",
    "describe_frames",
    "describe_match",
    "frame_matches",
    "payload_matches",
    "subset_matches",
    "text_matches",
    "type_of",
]

#: A ``match`` argument: a dict compared as a subset of the message (or of its
#: ``match_in`` field), or a predicate on the whole parsed message.
Match = Mapping[str, Any] | Callable[[dict[str, Any]], bool]

#: A ``text`` argument: the frame's exact text, a regex searched in it, or a predicate on the raw payload.
TextMatch = str | re.Pattern[str] | Callable[[Any], bool]


def type_of(message: Any, key: str = "type") -> str | None:
    """The type of a parsed frame: the value at ``key`` (a dotted path), as text; None if absent."""
    value: Any = message
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def subset_matches(expected: Any, actual: Any) -> bool:
    """True when ``expected`` is contained in ``actual`` (dicts as subsets, the rest by equality)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(k in actual and subset_matches(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


def frame_matches(
    message: Mapping[str, Any],
    *,
    type: str | None = None,
    match: Match | None = None,
    type_key: str = "type",
    match_in: str | None = "data",
) -> bool:
    """Whether ``message`` has ``type`` (when given) and satisfies ``match`` (when given).

    A dict ``match`` is compared with ``message[match_in]`` (the Nova envelope's
    ``data``), or with the whole message when ``match_in`` is None.
    """
    if type is not None and type_of(message, type_key) != type:
        return False
    if match is None:
        return True
    if callable(match):
        return bool(match(dict(message)))
    return subset_matches(match, message if match_in is None else message.get(match_in))


def text_matches(raw: str | bytes, text: TextMatch) -> bool:
    """Whether the payload ``raw`` satisfies ``text`` (see the module docstring)."""
    if isinstance(text, re.Pattern):
        return isinstance(raw, str) and text.search(raw) is not None
    if isinstance(text, str):
        return raw == text
    return bool(text(raw))


def payload_matches(
    raw: str | bytes,
    message: Mapping[str, Any] | None,
    *,
    type: str | None = None,
    match: Match | None = None,
    text: TextMatch | None = None,
    type_key: str = "type",
    match_in: str | None = "data",
) -> bool:
    """One frame against every criterion given; with none, every frame matches (JSON or not)."""
    if text is not None and not text_matches(raw, text):
        return False
    if type is None and match is None:
        return True
    if message is None:
        return False
    return frame_matches(message, type=type, match=match, type_key=type_key, match_in=match_in)


def describe_match(
    type: str | None = None, match: Match | None = None, text: TextMatch | None = None
) -> str:
    """``of type 'x' matching {...} with text ...`` for wait messages (empty when nothing is asked)."""
    parts = []
    if type is not None:
        parts.append(f"of type {type!r}")
    if match is not None:
        parts.append(f"matching {match!r}")
    if text is not None:
        if isinstance(text, re.Pattern):
            parts.append(f"with text /{text.pattern}/")
        elif isinstance(text, str):
            parts.append(f"with text {text!r}")
        else:
            parts.append(f"with text satisfying {getattr(text, '__name__', 'a predicate')}")
    return " ".join(parts)


def describe_frames(messages: Sequence[Any], *, limit: int = 20, width: int = 200) -> str:
    """A readable listing of the last ``limit`` messages (parsed or raw), one per line."""
    if not messages:
        return "  (none)"
    shown = list(messages)[-limit:]
    lines = []
    if len(messages) > limit:
        lines.append(f"  ... {len(messages) - limit} earlier frames not shown")
    for m in shown:
        if isinstance(m, bytes):
            text = f"<binary {len(m)} bytes>"
        elif isinstance(m, str):
            text = m
        else:
            text = json.dumps(m, default=str)
        lines.append("  " + (text if len(text) <= width else text[: width - 3] + "..."))
    return "\n".join(lines)
