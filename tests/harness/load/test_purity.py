"""The load package's pure modules do no I/O, and its public surface is what __all__ lists."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import harness.load

ROOT = Path(__file__).resolve().parents[3]
PURE = ["scenarios", "metrics", "results", "thresholds", "ramp", "errors"]
IO_MODULES = {"playwright", "socket", "asyncio", "httpx", "websockets", "uvicorn", "starlette", "fastapi",
              "gevent", "locust", "psutil", "time", "reference_server"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_and_no_clock(module: str) -> None:
    assert _imports(ROOT / "harness" / "load" / f"{module}.py") & IO_MODULES == set()


def test_importing_the_api_does_not_import_the_engine() -> None:
    code = "import sys, harness.load; print('websockets' in sys.modules, 'asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_all_lists_exactly_the_public_names_and_each_is_documented() -> None:
    for name in harness.load.__all__:
        obj = getattr(harness.load, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"harness.load.{name} has no docstring"
    public = {n for n, v in vars(harness.load).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public - {"annotations", "importlib", "TYPE_CHECKING", "Any"} <= set(harness.load.__all__)


@pytest.mark.parametrize("module", ["scenarios", "metrics", "ramp"])
def test_the_examples_in_docstrings_hold(module: str) -> None:
    import doctest
    import importlib

    failed, attempted = doctest.testmod(importlib.import_module(f"harness.load.{module}"))
    assert attempted > 0 and failed == 0
