"""Every Python example in the docs runs: test examples as tests, the rest must compile.

For each document, the fenced ``python`` blocks that define ``test_`` functions become
test modules of a temporary project, and blocks that only define fixtures become its
``conftest.py``; the project runs in a pytest subprocess with the installed plugin.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([*ROOT.joinpath("docs").glob("*.md"), ROOT / "README.md"])
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_python_block_compiles(doc: Path) -> None:
    for index, block in enumerate(_blocks(doc)):
        compile(block, f"{doc.name}[{index}]", "exec")


#: Pages whose examples run against another app than the reference one, in a test of their own.
OWN_RUNNERS = {"own-app.md": "tests/test_docs_own_app.py"}
RUNNABLE = [d for d in DOCS if d.name not in OWN_RUNNERS and any("def test_" in b for b in _blocks(d))]


@pytest.mark.parametrize("doc", RUNNABLE, ids=lambda p: p.name)
def test_examples_pass_as_tests(doc: Path, pytester: pytest.Pytester) -> None:
    blocks = _blocks(doc)
    tests = [b for b in blocks if "def test_" in b]
    fixtures = [b for b in blocks if "def test_" not in b and "@pytest.fixture" in b]
    for index, block in enumerate(tests):
        pytester.makepyfile(**{f"test_example_{index}": block})
    if fixtures:
        pytester.makeconftest("\n\n".join(fixtures))
    expected = sum(len(re.findall(r"^def test_", b, re.MULTILINE)) for b in tests)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=expected)
