"""Every HeliosError code has a MongoDB error, and error documents have one shape."""

from __future__ import annotations

import pytest

from heliosdb.errors import ErrorCode, HeliosError, invalid
from heliosdb.interfaces.mongodb import errors

# Codes that make drivers mark the server unknown or retry: never for ordinary failures.
FORBIDDEN = {10107, 13435, 13436, 11602, 189, 91, 11600, 10058, 89, 9001, 262, 134}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_is_mapped(code: ErrorCode) -> None:
    assert code in errors.BY_CODE
    document = errors.from_exception(HeliosError(code, "message"))
    assert document["ok"] == 0.0 and document["errmsg"] == "message"
    assert document["code"] not in FORBIDDEN
    assert document["codeName"] == errors.CODE_NAMES[document["code"]]


@pytest.mark.parametrize("kind", list(errors.BY_KIND))
def test_every_kind_has_a_name(kind: str) -> None:
    assert errors.BY_KIND[kind] in errors.CODE_NAMES


def test_duplicate_key_carries_pattern_and_value() -> None:
    exc = HeliosError(
        ErrorCode.CONFLICT,
        "E11000 ...",
        kind="duplicate_key",
        key_pattern={"a": 1},
        key_value={"a": 5},
    )
    assert errors.from_exception(exc)["keyValue"] == {"a": 5}
    assert errors.write_error(3, exc) == {
        "index": 3,
        "code": 11000,
        "errmsg": "E11000 ...",
        "keyPattern": {"a": 1},
        "keyValue": {"a": 5},
    }


def test_kind_picks_the_code() -> None:
    assert errors.from_exception(invalid("x", kind="type_mismatch"))["code"] == 14
    assert errors.from_exception(errors.command_not_found("zap"))["errmsg"] == (
        "no such command: 'zap'"
    )
