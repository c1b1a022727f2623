"""The REST error table is total and the error body has one shape."""

from __future__ import annotations

import orjson
import pytest

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.interfaces.http.errors import STATUS, error_body, error_response


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_an_http_status(code: ErrorCode) -> None:
    assert code in STATUS, f"map {code} in interfaces/http/errors.STATUS"
    assert 400 <= STATUS[code] <= 599


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_response_body(code: ErrorCode) -> None:
    response = error_response(HeliosError(code, "what went wrong", sqlstate="42P01"))
    assert response.status_code == STATUS[code]
    assert response.media_type == "application/json"
    body = orjson.loads(bytes(response.body))
    assert body == {
        "error": {"code": code.value, "message": "what went wrong", "sqlstate": "42P01"}
    }


def test_error_body_drops_empty_details() -> None:
    assert error_body(HeliosError(ErrorCode.NOT_FOUND, "gone", table=None)) == {
        "error": {"code": "NOT_FOUND", "message": "gone"}
    }


def test_unauthenticated_asks_for_bearer() -> None:
    response = error_response(HeliosError(ErrorCode.UNAUTHENTICATED, "no key"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_rate_limit_says_when_to_retry() -> None:
    response = error_response(HeliosError(ErrorCode.RATE_LIMIT_EXCEEDED, "slow", retry_after=3))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
