"""Domain validation and access control for channels: pure functions, no I/O.

Channel access table (permissions come from the API key, see settings):

=====================  ==================  ==================
channel                subscribe needs     publish needs
=====================  ==================  ==================
``announcements``      ``read``            ``admin``
``admin:*``            ``admin``           ``admin``
``thread:{id}``        ``read``            ``write``
anything else          ``read``            ``write``
=====================  ==================  ==================
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .protocol import CHANNEL_PATTERN, CLIENT_ID_PATTERN, is_valid_channel, is_valid_client_id

__all__ = [
    "ACCESS_RULES",
    "AccessRule",
    "Action",
    "channel_problem",
    "check_access",
    "client_id_problem",
    "required_permission",
]

Action = Literal["subscribe", "publish"]


@dataclass(frozen=True)
class AccessRule:
    match: str
    subscribe: str
    publish: str

    def applies(self, channel: str) -> bool:
        if self.match.endswith(":*"):
            return channel.startswith(self.match[:-1])
        return self.match == "*" or channel == self.match


ACCESS_RULES: tuple[AccessRule, ...] = (
    AccessRule("announcements", subscribe="read", publish="admin"),
    AccessRule("admin:*", subscribe="admin", publish="admin"),
    AccessRule("thread:*", subscribe="read", publish="write"),
    AccessRule("*", subscribe="read", publish="write"),
)


@lru_cache(maxsize=4096)
def required_permission(channel: str, action: Action) -> str:
    """The permission ``action`` on ``channel`` needs (the first matching rule wins)."""
    for rule in ACCESS_RULES:
        if rule.applies(channel):
            return rule.subscribe if action == "subscribe" else rule.publish
    raise AssertionError("the catch-all rule always applies")  # pragma: no cover


def channel_problem(channel: str) -> str | None:
    """Why ``channel`` is not a valid channel name, or None when it is."""
    if is_valid_channel(channel):
        return None
    return (
        f"invalid channel name {channel!r}: it must match {CHANNEL_PATTERN} "
        "(lowercase letters, digits, '_' or '-', at most 64 characters, "
        "optionally ':' and a sub-name, e.g. 'general' or 'thread:42')"
    )


def client_id_problem(client_id: str) -> str | None:
    """Why ``client_id`` is not a valid client id, or None when it is."""
    if is_valid_client_id(client_id):
        return None
    return (
        f"invalid client id {client_id[:80]!r}: it must match {CLIENT_ID_PATTERN} "
        "(1 to 64 of A-Z a-z 0-9 _ -)"
    )


def check_access(channel: str, action: Action, permissions: Collection[str]) -> str | None:
    """None when allowed, else a message naming the missing permission."""
    needed = required_permission(channel, action)
    if needed in permissions:
        return None
    return f"{action} on {channel!r} requires the {needed!r} permission; this key has {sorted(permissions)}"


def lookup_api_key(api_keys: Mapping[str, list[str]], presented: str) -> list[str] | None:
    """The permissions of ``presented``, or None when it is no configured key.

    Constant time with respect to the key contents: every configured key is
    compared with :func:`hmac.compare_digest` (on UTF-8 bytes, so non-ASCII
    input cannot raise), without stopping at the first match.
    """
    given = presented.encode("utf-8", "surrogatepass")
    found: list[str] | None = None
    for key, permissions in api_keys.items():
        if hmac.compare_digest(key.encode("utf-8", "surrogatepass"), given):
            found = permissions
    return found
