"""Log lines a client cannot forge and that never carry a key: one filter on the server's loggers.

Everything a client controls can reach a log line: a ``client_error``'s message and
context, a client id or channel name before it is validated, request paths and query
strings (uvicorn logs ``"WebSocket /debug/x?api_key=..." [accepted]`` and, with access
logging on, every request line).  :class:`LogSanitizer` rewrites each record before any
handler sees it:

* **Control characters are escaped** (CWE-117): CR, LF, every other C0 and C1 control
  character, DEL and the Unicode line and paragraph separators become ``\\n``, ``\\r``,
  ``\\t``, ``\\xNN`` or ``\\uNNNN``, so a message can never start a new line, forge a
  level prefix or move a terminal's cursor.  A backslash is left as it is: the escape is
  for the reader, and the line stays one line whatever the client sent.
* **Sensitive query parameters are redacted**: the value of every ``name=value`` that
  follows ``?``, ``&`` or ``;`` and whose (percent-decoded, case-folded) name is in the
  filter's list becomes ``[REDACTED]``; the default list is
  :data:`DEFAULT_REDACTED_PARAMS` (``settings.log_redact_params``).

A filter on a :class:`logging.Logger` only sees records created on that very logger, not
those propagated from its children, so :func:`install_log_sanitizer` puts it on each of
:data:`SERVER_LOGGERS` and on every logger below them that exists when it runs (the
server's modules create theirs at import, before :func:`reference_server.app.create_app`
calls it).  Loggers are process-wide, so there is one filter per process: installing it
again adds the new names to the ones it already redacts, and never attaches it twice.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

__all__ = [
    "DEFAULT_REDACTED_PARAMS",
    "REDACTED",
    "SERVER_LOGGERS",
    "LogSanitizer",
    "escape_controls",
    "install_log_sanitizer",
    "redact_query",
    "sanitize",
]

#: Query parameters whose values never reach a log line (``settings.log_redact_params``).
DEFAULT_REDACTED_PARAMS: tuple[str, ...] = (
    "api_key",
    "token",
    "key",
    "access_token",
    "password",
    "secret",
)

#: What a redacted value is replaced with.
REDACTED = "[REDACTED]"

#: The loggers the server writes through; the filter also goes on their existing children.
SERVER_LOGGERS: tuple[str, ...] = (
    "reference_server",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
)

# C0 controls, DEL, C1 controls (NEL among them) and the two Unicode separators:
# str.splitlines() breaks on all of those that are line boundaries, terminals act on the rest.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# A query parameter: its name follows ?, & or ; and its value ends at the next separator,
# fragment, whitespace (a raw CR/LF included), quote or angle bracket.
_PARAM = re.compile(r"(?<=[?&;])([^=&;#?\s\"'<>]+)=([^&;#\s\"'<>]*)")


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character and line separator written as an escape."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_one, text)


def redact_query(text: str, names: Iterable[str] = DEFAULT_REDACTED_PARAMS) -> str:
    """``text`` with the values of query parameters named in ``names`` replaced by ``[REDACTED]``.

    Names compare case-insensitively and after percent-decoding (``API%5FKEY`` is
    ``api_key``); a parameter only counts after ``?``, ``&`` or ``;``, so ``monkey=1`` or
    a prose ``key=value`` at the start of a line are left alone.
    """
    wanted = names if isinstance(names, frozenset) else frozenset(n.lower() for n in names)
    if not wanted or "=" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if unquote(match.group(1)).lower() in wanted and match.group(2) != REDACTED:
            return f"{match.group(1)}={REDACTED}"
        return match.group()

    return _PARAM.sub(replace, text)


def sanitize(text: str, names: Iterable[str] = DEFAULT_REDACTED_PARAMS) -> str:
    """Redact ``names`` then escape control characters: what one log line may contain.

    Redaction runs first, on the raw text, so a raw line break still ends a parameter's
    value (after escaping, ``\\n`` would read as part of it).
    """
    return escape_controls(redact_query(text, names))


class LogSanitizer(logging.Filter):
    """Rewrite every record so its rendered message is :func:`sanitize`-d; never drops one.

    A record whose rendering needs no change is left as it is.  Otherwise, when
    sanitizing the format string and each string argument renders the sanitized
    message, the record keeps its (sanitized) arguments, for formatters that read them
    (uvicorn's access formatter unpacks its five); else (a non-string argument whose
    ``str()`` holds a line break, a parameter split across arguments) its message
    becomes the sanitized rendering and its arguments are dropped.
    """

    def __init__(self, names: Iterable[str] = DEFAULT_REDACTED_PARAMS) -> None:
        super().__init__()
        self._names: frozenset[str] = frozenset(n.lower() for n in names)
        self._lock = threading.Lock()

    @property
    def names(self) -> frozenset[str]:
        """The (case-folded) query parameter names this filter redacts."""
        return self._names

    def add_names(self, names: Iterable[str]) -> None:
        """Redact ``names`` too; the ones already redacted stay."""
        with self._lock:
            self._names = self._names | {n.lower() for n in names}

    def _clean(self, value: Any) -> Any:
        return sanitize(value, self._names) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            rendered = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's own error to report
            return True
        cleaned = sanitize(rendered, self._names)
        if cleaned == rendered:
            return True
        if isinstance(record.msg, str) and record.args:
            msg = escape_controls(record.msg)
            args: Any = record.args
            if isinstance(args, tuple):
                args = tuple(self._clean(a) for a in args)
            elif isinstance(args, Mapping):
                args = {k: self._clean(v) for k, v in args.items()}
            try:
                kept = msg % args == cleaned
            except (TypeError, ValueError, KeyError):
                kept = False
            if kept:
                record.msg, record.args = msg, args
                return True
        record.msg, record.args = cleaned, ()
        return True


_installed: LogSanitizer | None = None
_install_lock = threading.Lock()


def install_log_sanitizer(names: Iterable[str] = DEFAULT_REDACTED_PARAMS) -> LogSanitizer:
    """Put the process's :class:`LogSanitizer` on the server's loggers; idempotent.

    Attaches it to every logger in :data:`SERVER_LOGGERS` and every existing logger
    below them that does not have it yet, adds ``names`` to what it redacts, and returns
    it.  Call it after the modules that log have been imported (``create_app`` does).
    """
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = LogSanitizer(names)
        else:
            _installed.add_names(names)
        sanitizer = _installed
        for logger in _server_loggers():
            if sanitizer not in logger.filters:
                logger.addFilter(sanitizer)
    return sanitizer


def _server_loggers() -> list[logging.Logger]:
    loggers = [logging.getLogger(name) for name in SERVER_LOGGERS]
    prefixes = tuple(f"{name}." for name in SERVER_LOGGERS)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith(prefixes):
            loggers.append(logger)
    return loggers
