"""The one place a failure becomes the WebSocket ``error`` object."""

from __future__ import annotations

import logging
from typing import Any

from heliosdb.errors import ErrorCode, HeliosError

log = logging.getLogger("heliosdb.websocket")

# Close codes for failures that end the connection (RFC 6455 and the 4000-4999 range).
CLOSE_CODES = {
    ErrorCode.UNAUTHENTICATED: 4001,
    ErrorCode.PERMISSION_DENIED: 4003,
    ErrorCode.RESOURCE_EXHAUSTED: 4008,
}


def error_object(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, HeliosError):
        return {"code": exc.code.value, "message": exc.message, **exc.details}
    log.error("unexpected error in a WebSocket handler", exc_info=exc)
    return {"code": ErrorCode.INTERNAL.value, "message": "internal error"}
