"""The protocol models (reference_server/protocol.py), pure: no server, no socket.

Spec: every case in ``fixtures/messages`` parses (or fails, naming the problem)
as it says; the corpus covers every message type in both directions and every
error code; ``CloseCode.reconnects``, ``make_message``, the id helpers and the
generated JSON Schema agree with the models.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from reference_server import protocol
from reference_server.protocol import (
    CLIENT_MESSAGE_TYPES,
    SERVER_MESSAGE_TYPES,
    CloseCode,
    ErrorCode,
    ProtocolError,
    is_valid_channel,
    is_valid_client_id,
    json_schema,
    make_message,
    new_id,
    now_iso,
    parse_any_message,
    parse_client_message,
    parse_server_message,
)
from tests._corpus import Case, load_corpus

CASES = load_corpus()
VALID = [c for c in CASES if c.expected_valid]
INVALID = [c for c in CASES if not c.expected_valid]


def _parse(case: Case) -> Any:
    parse = parse_client_message if case.direction == "client" else parse_server_message
    return parse(case.parse_input)


# ------------------------------------------------------------------ the corpus


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_case_parses(case: Case) -> None:
    message = _parse(case)
    decoded = json.loads(case.raw) if case.raw is not None else case.frame
    assert message.type == decoded["type"]
    # the any-direction parser agrees, and the text form parses the same way
    assert parse_any_message(case.parse_input) == message
    assert _parse_text(case) == message


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_case_round_trips_through_json(case: Case) -> None:
    """Serialising a parsed message and parsing it again gives the same message."""
    message = _parse(case)
    again = json.loads(message.model_dump_json(exclude_none=False))
    parse = parse_client_message if case.direction == "client" else parse_server_message
    assert parse(again) == message


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_case_is_rejected_naming_the_problem(case: Case) -> None:
    with pytest.raises(ProtocolError) as caught:
        _parse(case)
    assert case.mentions is not None
    assert case.mentions in caught.value.message, (
        f"{case.id}: expected the error to mention {case.mentions!r}, got {caught.value.message!r}"
    )
    # details go back to the client inside an `error` frame: they must be JSON
    json.dumps(caught.value.details, allow_nan=False)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_case_is_rejected_as_text_too(case: Case) -> None:
    """What the server receives is text: the wire form fails the same way."""
    with pytest.raises(ProtocolError) as caught:
        _parse_text(case)
    assert case.mentions is not None and case.mentions in caught.value.message


def _parse_text(case: Case) -> Any:
    parse = parse_client_message if case.direction == "client" else parse_server_message
    return parse(case.text)


def test_corpus_covers_every_message_type_in_both_directions() -> None:
    def types(cases: list[Case], direction: str) -> set[str]:
        found = set()
        for case in cases:
            if case.direction != direction:
                continue
            try:
                frame = json.loads(case.raw) if case.raw is not None else case.frame
            except ValueError:  # the invalid-JSON cases
                continue
            if isinstance(frame, dict) and isinstance(frame.get("type"), str):
                found.add(frame["type"])
        return found

    assert types(VALID, "client") >= set(CLIENT_MESSAGE_TYPES)
    assert types(VALID, "server") >= set(SERVER_MESSAGE_TYPES)
    assert types(INVALID, "client") >= set(CLIENT_MESSAGE_TYPES)
    assert types(INVALID, "server") >= set(SERVER_MESSAGE_TYPES)


def test_corpus_covers_every_error_code() -> None:
    codes = {
        c.frame["data"]["code"]
        for c in VALID
        if c.direction == "server" and isinstance(c.frame, dict) and c.frame.get("type") == "error"
    }
    assert codes == {code.value for code in ErrorCode}


def test_corpus_covers_the_edge_categories() -> None:
    """Invalid JSON, non-objects, unknown types, bad timestamps, extra fields, wrong types."""
    mentions = {c.mentions for c in INVALID}
    for needle in (
        "not valid JSON",
        "must be a JSON object",
        "unknown message type",
        "ISO-8601",
        "Extra inputs are not permitted",
        "Field required",
        "lone UTF-16 surrogate",
        "NaN",
    ):
        assert any(needle in (m or "") for m in mentions), f"no invalid case mentions {needle!r}"


# ------------------------------------------------------------------ parsing rules


@pytest.mark.parametrize("raw", [b"\x00\x01", b'{"type": "ping"}', bytearray(b"x")])
def test_binary_frames_are_rejected(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="binary frames are not part of the Nova protocol") as caught:
        parse_client_message(raw)
    assert caught.value.details == {"frame": "binary", "length": len(raw)}


def test_invalid_json_details_locate_the_problem() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message('{"type": "ping",')
    assert caught.value.details["position"] == len('{"type": "ping",')


def test_schema_violations_list_each_problem() -> None:
    frame = {"type": "publish", "data": {}, "timestamp": "nope", "client_id": "c"}
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    locs = {tuple(e["loc"]) for e in caught.value.details}
    assert locs == {
        ("publish", "timestamp"),
        ("publish", "data", "channel"),
        ("publish", "data", "content"),
    }


def test_unknown_type_details_list_the_expected_types() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_server_message({"type": "subscribe"})
    assert caught.value.details == {"type": "subscribe", "expected": list(SERVER_MESSAGE_TYPES)}


def test_lone_surrogate_in_a_python_frame_is_rejected() -> None:
    frame = make_message("ping", client_id="c") | {"id": "\udc00"}
    with pytest.raises(ProtocolError, match="lone UTF-16 surrogate at id") as caught:
        parse_client_message(frame)
    assert caught.value.details == {"loc": ["id"]}


def test_timestamps_keep_their_offset() -> None:
    frame = make_message("ping", client_id="c") | {"timestamp": "2025-01-01T13:00:00+01:00"}
    assert parse_client_message(frame).timestamp == datetime(2025, 1, 1, 12, tzinfo=UTC)


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("code", "reconnects"),
    [
        (CloseCode.NORMAL, True),
        (CloseCode.GOING_AWAY, True),
        (CloseCode.ABNORMAL, True),
        (CloseCode.POLICY_VIOLATION, False),
        (CloseCode.MESSAGE_TOO_BIG, True),
        (CloseCode.INTERNAL_ERROR, True),
        (CloseCode.AUTH_FAILED, False),
        (CloseCode.AUTH_TIMEOUT, False),
        (CloseCode.REPLACED, False),
    ],
)
def test_close_code_reconnect_policy(code: CloseCode, reconnects: bool) -> None:
    assert code.reconnects is reconnects


def test_close_code_table_is_complete() -> None:
    assert {int(c) for c in CloseCode} == {
        1000, 1001, 1006, 1007, 1008, 1009, 1011, 1013, 4001, 4002, 4003
    }


def test_make_message_builds_a_valid_envelope() -> None:
    frame = make_message("publish", {"channel": "general", "content": "hi"}, client_id="c1", id="op-1")
    assert set(frame) == {"type", "data", "timestamp", "client_id", "id"}
    assert frame["client_id"] == "c1" and frame["id"] == "op-1"
    message = parse_client_message(json.dumps(frame))
    assert isinstance(message, protocol.PublishMessage)
    assert message.data.content == "hi"


def test_make_message_defaults_data_and_omits_id() -> None:
    frame = make_message("ping", client_id="c1")
    assert frame["data"] == {}
    assert "id" not in frame


@pytest.mark.parametrize(
    ("type_", "data", "needle"),
    [
        ("publish", {"channel": "general"}, "content: Field required"),
        ("nonsense", {}, "unknown message type 'nonsense'"),
        ("error", {"code": "nope", "message": "x"}, "data.code"),
    ],
)
def test_make_message_rejects_wrong_shapes(type_: str, data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(needle)):
        make_message(type_, data, client_id="c1")


def test_now_iso_is_utc_with_milliseconds_like_browsers() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", now_iso())


def test_new_id_is_fresh_hex() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


@pytest.mark.parametrize(
    ("client_id", "ok"),
    [("a", True), ("Browser_1-x", True), ("x" * 64, True), ("", False), ("x" * 65, False),
     ("has space", False), ("dot.ted", False), ("é", False), ("a/b", False)],
)
def test_client_id_pattern(client_id: str, ok: bool) -> None:
    assert is_valid_client_id(client_id) is ok


@pytest.mark.parametrize(
    ("channel", "ok"),
    [("general", True), ("a", True), ("0day", True), ("thread:7f3A_x-1", True), ("x" * 64, True),
     ("admin:ops", True), ("", False), ("General", False), ("-x", False), ("x" * 65, False),
     ("x:", False), ("x:y:z", False), ("a b", False), ("é", False), ("thread:" + "y" * 65, False)],
)
def test_channel_pattern(channel: str, ok: bool) -> None:
    assert is_valid_channel(channel) is ok


# ------------------------------------------------------------------ JSON Schema


def test_json_schema_names_every_message_model() -> None:
    schema = json_schema()
    json.dumps(schema)  # serialisable
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:nova:protocol:{protocol.PROTOCOL_VERSION}"
    defs = schema["$defs"]
    for type_ in CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES:
        model = _model_for(type_)
        assert model.__name__ in defs, type_
        assert defs[model.__name__]["properties"]["type"]["const"] == type_
    assert schema["oneOf"] == [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}]


def _model_for(type_: str) -> Any:
    for name in protocol.__all__:
        obj = getattr(protocol, name)
        fields = getattr(obj, "model_fields", None)
        if fields and "type" in fields and getattr(fields["type"].annotation, "__args__", None) == (type_,):
            return obj
    raise LookupError(type_)


def _validator(direction: str | None) -> Any:
    jsonschema_rs = pytest.importorskip(
        "jsonschema_rs", reason="no JSON Schema validator installed (it comes with schemathesis)"
    )
    schema = json_schema()
    if direction is not None:
        schema = {
            "$schema": schema["$schema"],
            "$ref": "#/$defs/" + ("ClientMessage" if direction == "client" else "ServerMessage"),
            "$defs": schema["$defs"],
        }
    return jsonschema_rs.validator_for(schema)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_case_validates_against_the_json_schema(case: Case) -> None:
    frame = json.loads(case.raw) if case.raw is not None else case.frame
    for direction in (case.direction, None):
        errors = [e.message for e in _validator(direction).iter_errors(frame)]
        assert not errors, f"{case.id} against the {direction or 'any'} schema: {errors}"


@pytest.mark.parametrize(
    "case",
    [c for c in INVALID if c.raw is None and "unknown message type" in (c.mentions or "")],
    ids=lambda c: c.id,
)
def test_json_schema_rejects_unknown_types(case: Case) -> None:
    assert not _validator(case.direction).is_valid(case.frame)
