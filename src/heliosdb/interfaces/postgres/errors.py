"""The one table from HeliosError codes to PostgreSQL SQLSTATEs, and the gateway's own errors.

Engine errors are relayed untouched: the client talks to PostgreSQL after startup. This
table covers what the gateway itself reports before the session exists (always FATAL,
then the connection closes).
"""

from __future__ import annotations

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.interfaces.postgres.codec import encode_error

SQLSTATE: dict[ErrorCode, str] = {
    ErrorCode.INVALID_ARGUMENT: "22023",
    ErrorCode.NOT_FOUND: "42704",
    ErrorCode.ALREADY_EXISTS: "42710",
    ErrorCode.CONFLICT: "40001",
    ErrorCode.UNAUTHENTICATED: "28P01",
    ErrorCode.PERMISSION_DENIED: "28000",
    ErrorCode.RATE_LIMIT_EXCEEDED: "53400",
    ErrorCode.PAYLOAD_TOO_LARGE: "54000",
    ErrorCode.QUERY_TIMEOUT: "57014",
    ErrorCode.RESOURCE_EXHAUSTED: "53300",
    ErrorCode.ENGINE_ERROR: "58000",
    ErrorCode.UNAVAILABLE: "57P03",
    ErrorCode.UNIMPLEMENTED: "0A000",
    ErrorCode.INTERNAL: "XX000",
}

# SQLSTATEs the gateway raises by name.
PROTOCOL_VIOLATION = "08P01"
FEATURE_NOT_SUPPORTED = "0A000"
INVALID_AUTHORIZATION = "28000"
INVALID_PASSWORD = "28P01"
UNKNOWN_DATABASE = "3D000"
TOO_MANY_CONNECTIONS = "53300"
PROGRAM_LIMIT_EXCEEDED = "54000"
CANNOT_CONNECT_NOW = "57P03"
ADMIN_SHUTDOWN = "57P01"
IDLE_TIMEOUT = "57P05"


def password_failed(user: str) -> bytes:
    """Wrong credentials, whichever part was wrong (PostgreSQL's exact wording)."""
    return encode_error(INVALID_PASSWORD, f'password authentication failed for user "{user}"')


def md5_unavailable(user: str) -> bytes:
    """MD5 asked of a login that has no MD5 verifier; the same words whoever ``user`` is,
    so the answer does not tell a SCRAM-only user from an unknown name."""
    return encode_error(
        INVALID_AUTHORIZATION,
        f'MD5 authentication is not available for user "{user}"',
        hint="This server asks for MD5 passwords (postgres.auth_method: md5). MD5 works "
        "only for HeliosDB users created with `heliosdb users create --md5`: API keys are "
        "stored as SHA-256 hashes and SCRAM verifiers, from which no MD5 answer can be "
        "checked. Log in with SCRAM-SHA-256 on a server that offers it.",
    )


def fatal(exc: HeliosError) -> bytes:
    return encode_error(SQLSTATE.get(exc.code, "XX000"), exc.message)
