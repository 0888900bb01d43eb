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
    "render_error_frame",
]


def load_profile(config: WsConfig, rootdir: Path | None = None) -> AppProfile:
    """The profile ``config`` names (``config.profile_name``); relative schema paths start at ``rootdir``."""
    name = config.profile_name
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
    profile = obj(config) if callable(obj) and not isinstance(obj, AppProfile) else obj
    if not isinstance(profile, AppProfile):
        missing = [a for a in ("name", "page_hook", "type_key", "match_in", "validator", "error_frame",
                               "is_error_frame", "client") if not hasattr(profile, a)]
        raise ConfigurationError(
            f"ws_profile {name!r} is not an app profile: it lacks {', '.join(missing)} "
            "(see harness.app.AppProfile)"
        )
    return profile
