"""docs/protocol.md is generated from the code and every example in it is true.

Spec: the file equals ``reference_server.docgen.render()`` (so the docs cannot
drift from the models); every example frame validates against the protocol
models and every message type has one; every REST example validates against
its request or response model; the quick-start snippet, run against a live
server, prints exactly what the docs say; every close code, error code and
REST operation of the app is documented.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from reference_server import docgen, rest
from reference_server.protocol import (
    CLIENT_MESSAGE_TYPES,
    SERVER_MESSAGE_TYPES,
    CloseCode,
    ErrorCode,
    parse_any_message,
)
from tests.conftest import LiveServer

DOC = docgen.DOCS_PATH.read_text(encoding="utf-8") if docgen.DOCS_PATH.exists() else ""
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(DOC) if kind == lang]


def test_docs_are_the_generators_output() -> None:
    assert DOC, f"{docgen.DOCS_PATH} is missing: run `python -m reference_server.docgen --write`"
    assert DOC == docgen.render(), (
        "docs/protocol.md is stale: run `python -m reference_server.docgen --write` and commit it"
    )


def test_check_flag_reports_staleness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = tmp_path / "fresh.md"
    assert docgen.main(["--write", "--path", str(fresh)]) == 0
    assert docgen.main(["--check", "--path", str(fresh)]) == 0
    fresh.write_text(fresh.read_text(encoding="utf-8").replace("Close codes", "Closing codes"), encoding="utf-8")
    assert docgen.main(["--check", "--path", str(fresh)]) == 1
    err = capsys.readouterr().err
    assert "-## Closing codes" in err and "+## Close codes" in err
    assert "is stale: regenerate it with `python -m reference_server.docgen --write`" in err


def test_render_is_deterministic_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = docgen.render()
    monkeypatch.setenv("NOVA_AUTH_TIMEOUT_MS", "1")
    monkeypatch.setenv("NOVA_MAX_MESSAGE_BYTES", "4096")
    assert docgen.render() == before


def test_undocumented_message_type_fails_the_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = dict(docgen._MESSAGES)
    del messages["pong"]
    monkeypatch.setattr(docgen, "_MESSAGES", messages)
    with pytest.raises(LookupError, match="no prose for message type pong"):
        docgen.render()


def test_every_example_frame_validates_and_every_type_has_one() -> None:
    seen: set[str] = set()
    for body in _blocks("json"):
        value = json.loads(body)
        if isinstance(value, dict) and {"type", "timestamp", "client_id"} <= set(value):
            seen.add(parse_any_message(value).type)
    assert seen == set(CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES)


def test_every_message_type_has_a_section() -> None:
    for type_ in CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES:
        assert f"\n#### `{type_}`\n" in DOC, type_


def test_every_close_code_and_error_code_is_documented() -> None:
    for code in CloseCode:
        reconnect = "yes" if code.reconnects else "no"
        assert f"| {int(code)} | `{code.name}` | {reconnect} |" in DOC, code
    for error in ErrorCode:
        assert f"| `{error.value}` |" in DOC, error


def test_every_rest_operation_of_the_app_is_documented(live_server: LiveServer) -> None:
    import httpx

    doc = httpx.get(f"{live_server.http_url}/openapi.json", timeout=10).json()
    for path, operations in doc["paths"].items():
        for method in operations:
            assert f"\n### `{method.upper()} {path}`\n" in DOC, f"{method.upper()} {path} is undocumented"


def _rest_sections() -> dict[str, str]:
    """`METHOD /path` -> the text of its section."""
    parts = re.split(r"^### `([A-Z]+ /[^`]*)`$", DOC, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _model_for(schema: dict[str, Any], openapi: dict[str, Any]) -> Any:
    if schema.get("type") == "array":
        return list[_model_for(schema["items"], openapi)]  # type: ignore[misc]
    name = schema["$ref"].rsplit("/", 1)[-1]
    return getattr(rest, name)


def test_rest_examples_validate_against_their_models() -> None:
    openapi = docgen._openapi()
    checked = 0
    for heading, text in _rest_sections().items():
        method, path = heading.split(" ", 1)
        operation = openapi["paths"][path][method.lower()]
        response = re.search(r"^Response `(\d+)`:\n\n```json\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
        if response is not None:
            schema = operation["responses"][response.group(1)]["content"]["application/json"]["schema"]
            TypeAdapter(_model_for(schema, openapi)).validate_python(json.loads(response.group(2)))
            checked += 1
        body = re.search(r"-d '(.*?)'", text)
        if body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            TypeAdapter(_model_for(schema, openapi)).validate_python(json.loads(body.group(1)))
            checked += 1
    assert checked >= 10


def test_quick_start_snippet_prints_what_the_docs_say(live_server: LiveServer) -> None:
    (snippet,) = _blocks("python")
    (expected,) = _blocks("text")
    assert "127.0.0.1:8000" in snippet
    code = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{live_server.port}")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == expected
