"""The public surface: exactly what __all__ lists, each documented."""

from __future__ import annotations

import inspect

import harness
from harness import plugin


def test_all_lists_exactly_the_public_names() -> None:
    for name in harness.__all__:
        getattr(harness, name)  # lazy names resolve
    public = {name for name in vars(harness) if not name.startswith("_")}
    modules = {name for name, value in vars(harness).items() if inspect.ismodule(value)}
    assert set(harness.__all__) == public - modules - {"annotations", "importlib", "TYPE_CHECKING", "Any"}


def test_every_export_is_documented() -> None:
    for name in harness.__all__:
        obj = getattr(harness, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"harness.{name} has no docstring"


def test_every_fixture_has_a_docstring() -> None:
    fixtures = ["ws_config", "ws_server", "ws_helper", "ws_client", "ws_faults"]
    for name in fixtures:
        assert inspect.getdoc(getattr(plugin, name)), name


def test_fixtures_are_documented_in_the_reference() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "plugin-reference.md").read_text()
    for name in ["ws_config", "ws_server", "ws_helper", "ws_client", "ws_faults"]:
        assert f"`{name}`" in text, name
    for marker in plugin.MARKERS:
        assert f"@pytest.mark.{marker}" in text, marker
