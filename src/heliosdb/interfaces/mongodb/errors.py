"""The one table from HeliosError to MongoDB's ``{ok: 0, errmsg, code, codeName}``.

A service may say more precisely what went wrong with a ``kind`` detail (for example
``duplicate_key`` or ``type_mismatch``); that picks the MongoDB code. Otherwise the
HeliosError code does. Codes that make drivers drop the server or retry (10107, 13435,
11600, 91, 189, 89, 9001, ...) are never used for ordinary failures.
"""

from __future__ import annotations

import logging
from typing import Any

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.services.documents.keytables import PARALLEL_ARRAYS

log = logging.getLogger("heliosdb.interfaces.mongodb")

CODE_NAMES: dict[int, str] = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    18: "AuthenticationFailed",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    28: "PathNotViable",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    52: "DollarPrefixedFieldName",
    59: "CommandNotFound",
    66: "ImmutableField",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    115: "CommandNotSupported",
    121: "DocumentValidationFailure",
    168: "InvalidPipelineOperator",
    171: "CannotIndexParallelArrays",
    238: "NotImplemented",
    262: "ExceededTimeLimit",
    10334: "BSONObjectTooLarge",
    11000: "DuplicateKey",
    11601: "Interrupted",
    40324: "Location40324",
}

BY_KIND: dict[str, int] = {
    "bad_value": 2,
    "failed_to_parse": 9,
    "type_mismatch": 14,
    "namespace_not_found": 26,
    "index_not_found": 27,
    "path_not_viable": 28,
    "conflicting_update": 40,
    "namespace_exists": 48,
    "dollar_prefixed": 52,
    "immutable_field": 66,
    "invalid_options": 72,
    "invalid_namespace": 73,
    "index_options_conflict": 85,
    "index_key_specs_conflict": 86,
    "invalid_pipeline_operator": 168,
    "not_implemented": 238,
    "document_too_large": 10334,
    "duplicate_key": 11000,
    "unknown_stage": 40324,
    "write_conflict": 112,
    "exceeded_memory_no_disk": 292,
    # views (services/documents/views.py) and $merge/$out (merges.py)
    "command_not_supported_on_view": 166,
    "option_not_supported_on_view": 157,
    "graph_contains_cycle": 93,
    "view_depth_limit_exceeded": 149,
    "operation_not_supported_in_transaction": 263,
    "unknown_field": 40415,
    "missing_field": 40414,
    "let_not_allowed": 51199,
    "merge_no_unique_index": 51183,
    "merge_on_field_missing": 51132,
    "merge_on_field_array": 51185,
    "merge_no_match": 13113,
}

# engine errors of our own SQL, by SQLSTATE
BY_SQLSTATE: dict[str, int] = {
    PARALLEL_ARRAYS: 171,  # a compound unique key over two arrays (keytables.py)
}

BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 2,
    ErrorCode.NOT_FOUND: 26,
    ErrorCode.ALREADY_EXISTS: 48,
    ErrorCode.CONFLICT: 112,  # WriteConflict
    ErrorCode.UNAUTHENTICATED: 18,
    ErrorCode.PERMISSION_DENIED: 13,
    ErrorCode.RATE_LIMIT_EXCEEDED: 462,  # IngressRequestRateLimitExceeded
    ErrorCode.PAYLOAD_TOO_LARGE: 10334,
    ErrorCode.QUERY_TIMEOUT: 50,
    ErrorCode.RESOURCE_EXHAUSTED: 146,  # ExceededMemoryLimit
    ErrorCode.ENGINE_ERROR: 1,
    ErrorCode.UNAVAILABLE: 1,
    ErrorCode.UNIMPLEMENTED: 238,
    ErrorCode.INTERNAL: 1,
}
CODE_NAMES.update(
    {
        112: "WriteConflict",
        462: "IngressRequestRateLimitExceeded",
        146: "ExceededMemoryLimit",
        292: "QueryExceededMemoryLimitNoDiskUseAllowed",
        225: "TransactionTooOld",
        251: "NoSuchTransaction",
        256: "TransactionCommitted",
        261: "TooManyLogicalSessions",
        263: "OperationNotSupportedInTransaction",
        50768: "Location50768",
        40573: "Location40573",
        93: "GraphContainsCycle",
        149: "ViewDepthLimitExceeded",
        157: "OptionNotSupportedOnView",
        166: "CommandNotSupportedOnView",
        13113: "MergeStageNoMatchingDocument",
        40414: "Location40414",
        40415: "Location40415",
        40601: "Location40601",
        51132: "Location51132",
        51183: "Location51183",
        51185: "Location51185",
        51199: "Location51199",
    }
)


class CommandError(Exception):
    """A MongoDB error raised by the interface itself (unknown command, bad field...)."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def mongo_code(error: HeliosError) -> int:
    location = error.details.get("location")
    if isinstance(location, int):
        return location  # the number of MongoDB's own assertion (a stage's option checks)
    kind = error.details.get("kind")
    if isinstance(kind, str) and kind in BY_KIND:
        return BY_KIND[kind]
    sqlstate = error.details.get("sqlstate")
    if isinstance(sqlstate, str) and sqlstate in BY_SQLSTATE:
        return BY_SQLSTATE[sqlstate]
    return BY_CODE.get(error.code, 1)


def error_document(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "ok": 0.0,
        "errmsg": message,
        "code": code,
        "codeName": CODE_NAMES.get(code, f"Location{code}" if code >= 10000 else "UnknownError"),
        **extra,
    }


def from_exception(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, CommandError):
        return error_document(exc.code, exc.message, **exc.extra)
    if isinstance(exc, HeliosError):
        code = mongo_code(exc)
        extra: dict[str, Any] = {}
        if code == 11000:
            extra = _duplicate_fields(exc)
        return error_document(code, exc.message, **extra)
    return error_document(1, "internal error")


def reply_for(command: str, exc: Exception) -> dict[str, Any]:
    """The reply to a command that raised ``exc`` (an unexpected one is logged)."""
    if not isinstance(exc, HeliosError | CommandError):
        log.error("mongodb command %s failed", command, exc_info=exc)
    return from_exception(exc)


def write_error(index: int, exc: HeliosError) -> dict[str, Any]:
    code = mongo_code(exc)
    out: dict[str, Any] = {"index": index, "code": code, "errmsg": exc.message}
    if code == 11000:
        out.update(_duplicate_fields(exc))
    return out


def _duplicate_fields(exc: HeliosError) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "key_pattern" in exc.details:
        out["keyPattern"] = exc.details["key_pattern"]
    if "key_value" in exc.details:
        out["keyValue"] = exc.details["key_value"]
    return out


def unauthorized(command: str) -> CommandError:
    return CommandError(13, f"Command {command} requires authentication")


def command_not_found(command: str) -> CommandError:
    return CommandError(59, f"no such command: '{command}'")
