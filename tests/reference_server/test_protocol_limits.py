"""The parser's own limits: nesting depth, integer length, seq range (no server needed).

Each used to escape :func:`parse_client_message` as RecursionError, ValueError
or, later, an SQLite OverflowError; each is now a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from reference_server.protocol import (
    MAX_JSON_DEPTH,
    MAX_SEQ,
    ProtocolError,
    SubscribeMessage,
    now_iso,
    operation_id,
    parse_any_message,
    parse_client_message,
)


def _client_error(context: Any, op: str = "op-1") -> dict[str, Any]:
    return {
        "type": "client_error",
        "data": {"message": "m", "context": context},
        "timestamp": now_iso(),
        "client_id": "c1",
        "id": op,
    }


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_parses() -> None:
    frame = _client_error({"a": _nested(MAX_JSON_DEPTH - 3)})  # envelope, data, context
    parse_client_message(json.dumps(frame))
    parse_client_message(frame)


@pytest.mark.parametrize("as_text", [True, False], ids=["text", "dict"])
@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH - 2, 900, 5000])
def test_nesting_past_the_limit_is_a_protocol_error(levels: int, as_text: bool) -> None:
    raw: Any = (
        json.dumps(_client_error({"a": []})).replace("[]", "[" * levels + "]" * levels)
        if as_text
        else _client_error({"a": _nested(levels)})
    )
    with pytest.raises(ProtocolError, match=f"more than {MAX_JSON_DEPTH} levels") as caught:
        parse_client_message(raw)
    assert caught.value.details == {"json_error": "nested too deeply", "max_depth": MAX_JSON_DEPTH}


def test_a_frame_of_brackets_inside_strings_is_not_too_deep() -> None:
    frame = _client_error({"code": "[" * 5000 + "{" * 5000})
    parse_client_message(json.dumps(frame))


def test_an_integer_longer_than_python_reads_is_a_protocol_error() -> None:
    digits = sys.get_int_max_str_digits()
    raw = json.dumps(_client_error({"n": 0})).replace('"n": 0', '"n": ' + "9" * (digits + 1))
    with pytest.raises(ProtocolError, match=f"more than {digits} digits") as caught:
        parse_client_message(raw)
    assert caught.value.details == {"json_error": "integer too long", "max_digits": digits}


def test_since_seq_is_bounded_by_sqlites_integer() -> None:
    def subscribe(since: int) -> str:
        return json.dumps(
            {
                "type": "subscribe",
                "data": {"channel": "general", "since_seq": since},
                "timestamp": now_iso(),
                "client_id": "c1",
            }
        )

    message = parse_client_message(subscribe(MAX_SEQ))
    assert isinstance(message, SubscribeMessage) and message.data.since_seq == 2**63 - 1
    with pytest.raises(ProtocolError, match="since_seq") as caught:
        parse_client_message(subscribe(MAX_SEQ + 1))
    assert caught.value.details[0]["loc"] == ["subscribe", "data", "since_seq"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (json.dumps(_client_error({}, op="op-7")), "op-7"),
        ('{"type": "publish", "id": "op-8"}', "op-8"),
        ('{"id": 5}', None),
        ("[1, 2]", None),
        ("{not json", None),
        ("[" * 5000 + "]" * 5000, None),
        ('{"id": "op-9", "n": ' + "9" * 5000 + "}", None),
        (b'{"id": "op-10"}', None),
        ({"id": "op-11"}, "op-11"),
    ],
    ids=["valid", "invalid-but-json", "id-not-a-string", "not-an-object", "not-json", "too-deep",
         "huge-integer", "binary", "dict"],
)
def test_operation_id_reads_the_id_of_any_frame_and_never_raises(raw: Any, expected: str | None) -> None:
    assert operation_id(raw) == expected


def test_the_journal_parser_has_the_same_limits() -> None:
    with pytest.raises(ProtocolError, match="levels"):
        parse_any_message(json.dumps(_client_error({"a": _nested(MAX_JSON_DEPTH)})))
