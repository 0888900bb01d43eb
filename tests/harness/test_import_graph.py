"""The direction of imports (DESIGN.md, "The app seam"), checked on the source itself.

``reference_server`` never imports ``harness``; ``harness`` imports
``reference_server`` only in the Nova profile and the reference branch of
serving; the pure modules import neither Playwright nor sockets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The only harness modules allowed to import reference_server.
MAY_IMPORT_REFERENCE = {"harness/app/nova.py", "harness/serving.py"}

#: Modules that decide or describe, with no I/O: no Playwright, sockets, asyncio or HTTP.
PURE = [
    "harness/config.py",
    "harness/matching.py",
    "harness/frames/log.py",
    "harness/faults/messages.py",
    "harness/faults/controller.py",
    "harness/app/requests.py",
    "harness/proxy/toxics.py",
    "harness/load/scenarios.py",
    "harness/load/metrics.py",
    "harness/load/results.py",
    "harness/load/thresholds.py",
    "harness/load/ramp.py",
    "harness/load/errors.py",
]
IO_MODULES = {"playwright", "socket", "asyncio", "httpx", "websockets", "uvicorn", "starlette", "fastapi"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_reference_server_never_imports_the_harness() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in _modules("reference_server") if "harness" in _imports(p)]
    assert offenders == []


def test_the_harness_imports_the_reference_server_only_in_the_nova_profile_and_serving() -> None:
    importing = {str(p.relative_to(ROOT)) for p in _modules("harness") if "reference_server" in _imports(p)}
    assert importing <= MAY_IMPORT_REFERENCE, sorted(importing - MAY_IMPORT_REFERENCE)


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    assert _imports(ROOT / module) & IO_MODULES == set()


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from reference_server.protocol import now_iso\n    import socket\n")
    assert {"reference_server", "socket"} <= _imports(source)
