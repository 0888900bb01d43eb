"""Which client a WebSocket request belongs to: pure, shared by the ASGI middleware and the proxy.

A test's client id reaches the server in one of three places, tried in order:

1. the ``{client_id}`` placeholder of the configured WebSocket path pattern
   (``ws_path``), in its path (``/ws/{client_id}``) or its query
   (``/ws?room=1&client={client_id}``);
2. the ``nova_ws_client_id`` cookie (:data:`CLIENT_ID_COOKIE`), which the helper
   sets in the test's browser context, for apps whose URLs carry no client id;
3. nothing: the request is not a test's (faults keyed by a client id leave it alone).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import parse_qsl, unquote

from ..config import PLACEHOLDER

__all__ = ["CLIENT_ID_COOKIE", "PLACEHOLDER", "client_id_from_request", "path_pattern_regex"]

#: The cookie naming the test's client id, set by the helper on the page's browser context.
CLIENT_ID_COOKIE = "nova_ws_client_id"



@lru_cache(maxsize=64)
def path_pattern_regex(pattern_path: str) -> re.Pattern[str] | None:
    """A regex matching request paths of ``pattern_path`` with the client id as group ``client_id``.

    None when the path part has no placeholder.  The path may sit under a
    mount prefix (``/app/ws/abc`` matches ``/ws/{client_id}``).
    """
    if PLACEHOLDER not in pattern_path:
        return None
    before, _, after = pattern_path.partition(PLACEHOLDER)
    return re.compile(rf"{re.escape(before)}(?P<client_id>[^/?#]+){re.escape(after)}$")


def _split(pattern: str) -> tuple[str, str]:
    path, _, query = pattern.partition("?")
    return path, query


def client_id_from_request(
    ws_path: str, path: str, query: str = "", cookie_header: str | None = None
) -> str | None:
    """The client id of a WebSocket request to ``path``?``query``, or None.

    ``ws_path`` is the configured pattern; ``cookie_header`` the request's
    ``Cookie`` header, if any.  Values are URL-decoded.
    """
    pattern_path, pattern_query = _split(ws_path)
    regex = path_pattern_regex(pattern_path)
    if regex is not None:
        found = regex.search(path)
        if found is not None:
            return unquote(found.group("client_id"))
    if PLACEHOLDER in pattern_query:
        keys = [k for k, v in parse_qsl(pattern_query, keep_blank_values=True) if v == PLACEHOLDER]
        values = dict(parse_qsl(query, keep_blank_values=True))
        for key in keys:
            if values.get(key):
                return values[key]
    if cookie_header:
        return _cookie(cookie_header, CLIENT_ID_COOKIE)
    return None


def _cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, as browsers send it.

    Split on ``;`` and ``=`` (as Starlette does), not with ``SimpleCookie``,
    which stops at the first pair it cannot parse: an app's own cookie such as
    ``consent={"ads":false}`` would hide ours.
    """
    for pair in header.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    return None  # an unterminated quote: malformed
                value = value[1:-1]
            return unquote(value) or None
    return None
