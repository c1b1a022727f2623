"""Credentials on gRPC: metadata ``authorization: Bearer <key>`` (or ``x-api-key: <key>``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from heliosdb.errors import HeliosError, unauthenticated
from heliosdb.observability.metrics import AUTH_FAILURES
from heliosdb.security.principals import Principal
from heliosdb.services.keys import ApiKeys

_UNSET: Any = object()


def credential_in(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The key a call's metadata presents: a Bearer token, else ``x-api-key``."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
        if key == "x-api-key" and isinstance(value, str):
            return value.strip() or None
    return None


def credential_of(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    # The front's CallContext carries it, worked out once per distinct header block.
    known = getattr(context, "credential", _UNSET)
    if known is not _UNSET:
        return known  # type: ignore[no-any-return]
    return credential_in(context.invocation_metadata() or ())


def recent_principal(
    keys: ApiKeys, context: grpc.aio.ServicerContext[Any, Any]
) -> Principal | None:
    """The principal of a credential verified in the last second (ApiKeys.recent), without
    a coroutine; None: :func:`authenticate` decides (and counts a failure)."""
    token = credential_of(context)
    return keys.recent(token) if token is not None else None


async def authenticate(keys: ApiKeys, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
    token = credential_of(context)
    if token is None:
        AUTH_FAILURES.labels("grpc").inc()
        raise unauthenticated(
            "missing credentials: send the metadata 'authorization: Bearer <API key>'"
        )
    principal = keys.recent(token)  # verified in the last second: no hash, no await
    if principal is not None:
        return principal
    try:
        return await keys.authenticate(token)
    except HeliosError:
        AUTH_FAILURES.labels("grpc").inc()
        raise
