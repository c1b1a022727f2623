"""The gRPC error table is total; each status carries the HeliosDB code and details."""

from __future__ import annotations

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.interfaces.grpc.errors import CODE_KEY, DETAILS_KEY, STATUS, status_of


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_grpc_status(code: ErrorCode) -> None:
    assert code in STATUS, f"map {code} in interfaces/grpc/errors.STATUS"
    assert STATUS[code] is not grpc.StatusCode.OK


@pytest.mark.parametrize("code", list(ErrorCode))
def test_status_carries_code_and_details(code: ErrorCode) -> None:
    status = status_of(HeliosError(code, "what went wrong", sqlstate="42P01", position=3))
    assert status.code is STATUS[code]
    assert status.details == "what went wrong"
    trailing = dict(status.trailing_metadata)
    assert trailing[CODE_KEY] == code.value
    assert orjson.loads(trailing[DETAILS_KEY]) == {"sqlstate": "42P01", "position": 3}
    rich = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert info.reason == code.value
    assert dict(info.metadata) == {"sqlstate": "42P01", "position": "3"}


def test_status_without_details_has_no_details_entry() -> None:
    trailing = dict(status_of(HeliosError(ErrorCode.NOT_FOUND, "gone")).trailing_metadata)
    assert DETAILS_KEY not in trailing
