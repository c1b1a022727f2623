"""HeliosError -> gRPC status: the one table, and the one funnel every call leaves through.

The status code says what kind of failure it is; the HeliosDB code and details travel
twice, for clients of every kind:

- trailing metadata ``heliosdb-error-code`` (e.g. ``NOT_FOUND``) and, when there are
  details, ``heliosdb-error-details`` (JSON);
- a ``google.rpc.ErrorInfo`` (reason = the code, domain ``heliosdb.io``, metadata = the
  details as strings) in the standard ``grpc-status-details-bin`` rich status.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
import orjson
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from heliosdb.engine.codecs import json_default
from heliosdb.errors import ErrorCode, HeliosError

log = logging.getLogger("heliosdb.grpc")

ERROR_DOMAIN = "heliosdb.io"
CODE_KEY = "heliosdb-error-code"
DETAILS_KEY = "heliosdb-error-details"

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.CONFLICT: grpc.StatusCode.ABORTED,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.RATE_LIMIT_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.QUERY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.ENGINE_ERROR: grpc.StatusCode.INTERNAL,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}


def status_of(error: HeliosError) -> grpc.Status:
    """The rich status for ``error``: code, message, ErrorInfo, and our trailing metadata."""
    code = STATUS[error.code]
    info = error_details_pb2.ErrorInfo(
        reason=error.code.value,
        domain=ERROR_DOMAIN,
        metadata={k: _text(v) for k, v in error.details.items()},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    )
    metadata: list[tuple[str, str | bytes]] = [(CODE_KEY, error.code.value)]
    if error.details:
        metadata.append((DETAILS_KEY, orjson.dumps(error.details, default=json_default).decode()))
    return _Status(status.code, status.details, (*status.trailing_metadata, *metadata))


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: HeliosError) -> NoReturn:
    await context.abort_with_status(status_of(error))  # type: ignore[attr-defined]
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def from_unexpected(method: str, exc: BaseException) -> HeliosError:
    log.error("unhandled error in %s", method, exc_info=exc)
    return HeliosError(ErrorCode.INTERNAL, "internal error")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=json_default).decode()


class _Status(grpc.Status):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...]
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
