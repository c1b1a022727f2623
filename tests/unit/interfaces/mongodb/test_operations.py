"""What currentOp shows of a command (its namespace, never its credentials), and the
$currentOp stage's option checks."""

from __future__ import annotations

from typing import cast

import pytest

from heliosdb.interfaces.mongodb.commands.operations import (
    _namespace,
    _redacted,
    current_op_stage,
)
from heliosdb.interfaces.mongodb.connection import Session
from heliosdb.interfaces.mongodb.errors import CommandError


def test_redacted_hides_a_scram_conversation_whole() -> None:
    body = {"saslContinue": 1, "conversationId": 1, "payload": b"c=biws,r=secret"}
    assert _redacted("saslContinue", body) == {"saslContinue": "###"}


def test_redacted_hides_credential_fields_of_other_commands() -> None:
    body = {"hello": 1, "speculativeAuthenticate": {"payload": b"n,,n=apikey"}, "client": {}}
    assert _redacted("hello", body) == {"hello": 1, "speculativeAuthenticate": "###", "client": {}}
    assert _redacted("find", {"find": "c", "filter": {"a": 1}}) == {
        "find": "c",
        "filter": {"a": 1},
    }


def test_namespace_of_collection_commands_and_others() -> None:
    assert _namespace("find", "shop", {"find": "orders"}) == "shop.orders"
    assert _namespace("getMore", "shop", {"getMore": 7, "collection": "orders"}) == "shop.orders"
    assert _namespace("aggregate", "shop", {"aggregate": 1}) == "shop.$cmd"
    assert _namespace("ping", "admin", {"ping": 1}) == "admin.$cmd"


def test_current_op_stage_options_are_checked() -> None:
    nobody = cast(Session, None)  # refused before any connection is looked at
    for db, spec, code in (
        ("shop", {}, 73),
        ("admin", [], 9),
        ("admin", {"allUsers": 1}, 14),
        ("admin", {"everything": True}, 40415),
    ):
        with pytest.raises(CommandError) as refused:
            current_op_stage(nobody, db, spec)
        assert refused.value.code == code


def test_redacted_keeps_fields_that_only_look_like_secrets() -> None:
    body = {"distinct": "users", "key": "password", "query": {"password": {"$exists": True}}}
    assert _redacted("distinct", body) == body
