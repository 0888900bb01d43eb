"""The ``generic`` profile: any app, with no hook in its page and frames of its own.

Configured by settings (see docs/plugin-reference.md): frames are typed by
``ws_type_key``, a dict ``match`` is compared with the whole frame, frames are
validated against the app's own JSON Schema (``ws_frame_schema``) or not at
all, and ``simulate_error`` pushes ``ws_error_frame`` with the message in
place of ``{message}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..config import WsConfig, frame_schema_paths
from ..errors import ConfigurationError
from ..matching import subset_matches
from .base import FrameValidator

if TYPE_CHECKING:
    from ..client import WsClient

__all__ = ["GenericProfile", "SchemaValidator", "render_error_frame"]


def render_error_frame(template: str, message: str) -> Any:
    """``template`` (JSON) with ``{message}`` replaced in every string, as a JSON value."""

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{message}", message)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {fill(k): fill(v) for k, v in value.items()}
        return value

    return fill(json.loads(template))


class SchemaValidator:
    """Validates JSON frames against JSON Schemas, one per direction (a direction without one passes).

    A schema describes JSON: text frames that are not JSON (``ping``) and
    binary frames are outside it and pass; check them with
    ``expect_frame(text=...)``.
    """

    def __init__(self, schemas: dict[str, Path]) -> None:
        try:
            from jsonschema import validators
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ConfigurationError(
                "ws_frame_schema needs the jsonschema package: pip install 'jsonschema>=4.18'"
            ) from exc
        self.paths = dict(schemas)
        self._validators: dict[str, Any] = {}
        for direction, path in schemas.items():
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigurationError(
                    f"ws_frame_schema: cannot read {path} ({exc.strerror}); paths are relative to "
                    "the rootdir (where pytest.ini / pyproject.toml is)"
                ) from None
            except ValueError as exc:
                raise ConfigurationError(f"ws_frame_schema: {path} is not JSON: {exc}") from None
            cls = validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except Exception as exc:  # noqa: BLE001 - jsonschema.SchemaError, shown to the user
                raise ConfigurationError(
                    f"ws_frame_schema: {path} is not a valid JSON Schema: {getattr(exc, 'message', exc)}"
                ) from None
            self._validators[direction] = cls(schema)

    def __call__(self, raw: str | bytes, direction: Literal["sent", "received"]) -> None:
        validator = self._validators.get(direction)
        if validator is None:
            return
        if isinstance(raw, bytes):
            return
        try:
            value = json.loads(raw)
        except ValueError:
            return
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            from jsonschema.exceptions import best_match

            top = next((e for e in errors if e.context), None)
            details = _branch_errors(top) if top is not None else []
            error: Any = top if details else best_match(errors)
            where = "/".join(str(p) for p in error.absolute_path) or "(the frame)"
            text = "; ".join(e.message for e in details) if details else error.message
            raise ValueError(f"{where}: {text} (schema {self.paths[direction].name})")


def _branch_errors(error: Any) -> list[Any]:
    """For a failed ``oneOf``/``anyOf``: the errors of the branch the frame meant (its ``const``s held).

    A frame typed ``chat`` missing ``text`` is told "'text' is a required
    property", not "not valid under any of the given schemas".
    """
    if not error.context:
        return []
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    meant = [errs for errs in branches.values() if not any(e.validator in ("const", "enum") for e in errs)]
    if not meant:
        return []
    if len(meant) == 1:
        return meant[0]
    # Several branches fit the frame's type (one schema for both directions): what they all say.
    common = [e for e in meant[0] if all(any(o.message == e.message for o in errs) for errs in meant[1:])]
    return common or min(meant, key=len)


@dataclass
class GenericProfile:
    """Any app: settings say how its frames look (see the module docstring)."""

    type_key: str = "type"
    error_template: str = '{"type": "error", "message": "{message}"}'
    validator: FrameValidator | None = None
    name: str = "generic"
    page_hook: bool = False
    match_in: str | None = None

    @classmethod
    def from_config(cls, config: WsConfig, rootdir: Path | None = None) -> GenericProfile:
        validator: FrameValidator | None = None
        if config.frame_schema:
            base = rootdir or Path.cwd()
            paths = {d: (base / p) for d, p in frame_schema_paths(config.frame_schema).items()}
            validator = SchemaValidator(paths)
        return cls(type_key=config.type_key, error_template=config.error_frame, validator=validator)

    def error_frame(self, message: str, client_id: str) -> str:
        return json.dumps(render_error_frame(self.error_template, message))

    def is_error_frame(self, frame: object, message: str) -> bool:
        return subset_matches(render_error_frame(self.error_template, message), frame)

    def client(self, url: str, client_id: str, *, timeout: float) -> WsClient:
        from ..client import WsClient

        return WsClient(url, client_id=client_id, default_timeout=timeout, type_key=self.type_key)
