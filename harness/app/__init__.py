"""The app seam: everything that differs from one app under test to another.

:func:`load_profile` turns the configuration into an :class:`AppProfile`:
``nova`` (the reference app), ``generic`` (any app, configured by settings),
or ``module:attr`` (a profile of your own).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..config import WsConfig
from ..errors import ConfigurationError
from .base import AppProfile, FrameValidator
from .generic import GenericProfile, SchemaValidator, render_error_frame
from .requests import CLIENT_ID_COOKIE, client_id_from_request

__all__ = [
    "CLIENT_ID_COOKIE",
    "AppProfile",
    "FrameValidator",
    "GenericProfile",
    "SchemaValidator",
    "client_id_from_request",
    "load_profile",
    "profile_name_for",
    "render_error_frame",
]


def profile_name_for(config: WsConfig, http_url: str | None = None) -> str:
    """The profile to use: ``ws_profile`` when set; else ``nova`` for the reference server, ``generic`` otherwise.

    An app already running (``--ws-base-url``) is the reference server when its
    ``/health`` answers as the reference server's does (``status`` and
    ``protocol_version``), as a separately started reference server does.
    """
    if config.profile or not config.base_url:
        return config.profile_name
    url = (http_url or config.base_url).rstrip("/") + "/health"
    try:
        import httpx

        answer = httpx.get(url, timeout=2.0).json()
    except Exception:  # noqa: BLE001 - not reachable or not JSON: not the reference server
        return "generic"
    is_nova = isinstance(answer, dict) and answer.get("status") == "ok" and "protocol_version" in answer
    return "nova" if is_nova else "generic"


def load_profile(config: WsConfig, rootdir: Path | None = None, *, http_url: str | None = None) -> AppProfile:
    """The profile for ``config`` (:func:`profile_name_for`); relative schema paths start at ``rootdir``."""
    name = profile_name_for(config, http_url)
    if name == "nova":
        from .nova import NovaProfile

        return NovaProfile()
    if name == "generic":
        return GenericProfile.from_config(config, rootdir)
    module_name, _, attr = name.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"ws_profile {name!r}: cannot load it ({exc}); give 'module:attribute' of a profile object "
            "or of a callable taking the WsConfig, importable from the rootdir"
        ) from None
    # A class (even one whose class attributes satisfy the protocol) or a factory gets the config.
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, AppProfile)):
        try:
            profile = obj(config)
        except TypeError as exc:
            raise ConfigurationError(
                f"ws_profile {name!r} could not be made with the WsConfig ({exc}); a profile class or "
                "factory named by ws_profile takes the config as its one argument"
            ) from None
    else:
        profile = obj
    if not isinstance(profile, AppProfile):
        missing = [a for a in ("name", "page_hook", "type_key", "match_in", "validator", "error_frame",
                               "is_error_frame", "client") if not hasattr(profile, a)]
        raise ConfigurationError(
            f"ws_profile {name!r} is not an app profile: it lacks {', '.join(missing)} "
            "(see harness.app.AppProfile)"
        )
    return profile
