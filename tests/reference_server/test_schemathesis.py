"""Property-based REST testing: schemathesis over the server's OpenAPI document.

Every operation of the OpenAPI document is exercised with generated requests
carrying a valid ``X-API-Key`` against a live server; no response may be a
5xx (schemathesis' ``not_a_server_error`` check).  Bounded: 25 examples per
operation and no per-example deadline, so the module takes seconds.

The operations are collected from the document the app generates, and
:func:`test_live_server_serves_the_tested_document` checks that the live
server's ``/openapi.json`` is exactly that document.  (Loading it from the
live server through ``schemathesis.pytest.from_fixture`` would be more
direct, but schemathesis 4.32's lazy loader sets ``Function._nodeid``,
which pytest 9 no longer has.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from reference_server.app import create_app
from reference_server.settings import Settings
from tests.conftest import LiveServer, start_server

#: The key has every permission (read, write, admin), so generated requests
#: reach the handlers instead of stopping at 403.
API_KEY = "development"

#: Built without starting anything: ``openapi()`` is pure.
OPENAPI: dict[str, Any] = create_app(Settings(db=Path(":memory:"), frontend_port=None)).openapi()

schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server for every operation this module fuzzes (one per xdist worker)."""
    server = start_server(tmp_path_factory.mktemp("schemathesis") / "nova.db")
    try:
        yield server
    finally:
        server.stop()


def test_live_server_serves_the_tested_document(api_server: LiveServer) -> None:
    response = httpx.get(f"{api_server.http_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == OPENAPI


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_rest_api_never_answers_5xx(case: schemathesis.Case[Any], api_server: LiveServer) -> None:
    """Generated requests with a valid key: any status but 5xx."""
    case.call_and_validate(
        base_url=api_server.http_url,
        headers={"X-API-Key": API_KEY},
        checks=[not_a_server_error],
        timeout=10,
    )
