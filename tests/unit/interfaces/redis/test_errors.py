"""Every HeliosError code and key-value reason has a Redis error text."""

from __future__ import annotations

import pytest

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.interfaces.redis import errors
from heliosdb.services.keyvalue.faults import Reason, fault


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_maps_to_a_redis_error(code: ErrorCode) -> None:
    text = errors.to_redis(HeliosError(code, "what went wrong")).text
    prefix = text.split(" ", 1)[0]
    assert prefix in {"ERR", "NOAUTH", "NOPERM"}
    # Prefixes that redis-py turns into special exceptions are only used where they belong.
    assert (prefix == "NOAUTH") == (code is ErrorCode.UNAUTHENTICATED)


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_an_exact_text(reason: Reason) -> None:
    assert reason.value in errors._BY_REASON
    assert errors.to_redis(fault(reason)).text == errors._BY_REASON[reason.value]


def test_texts_clients_depend_on() -> None:
    assert errors.to_redis(fault(Reason.WRONG_TYPE)).text == (
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    assert errors.unknown_command(b"foo", [b"a", b"b\nc"]).text == (
        "ERR unknown command 'foo', with args beginning with: 'a' 'b c' "
    )
    assert errors.wrong_arity("client|setname").text == (
        "ERR wrong number of arguments for 'client|setname' command"
    )
