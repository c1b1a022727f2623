"""Credentials on gRPC: metadata ``authorization: Bearer <key>`` (or ``x-api-key: <key>``)."""

from __future__ import annotations

from typing import Any

import grpc

from heliosdb.errors import HeliosError, unauthenticated
from heliosdb.observability.metrics import AUTH_FAILURES
from heliosdb.security.principals import Principal
from heliosdb.services.keys import ApiKeys


def credential_of(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
        if key == "x-api-key" and isinstance(value, str):
            return value.strip() or None
    return None


async def authenticate(keys: ApiKeys, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
    token = credential_of(context)
    if token is None:
        AUTH_FAILURES.labels("grpc").inc()
        raise unauthenticated(
            "missing credentials: send the metadata 'authorization: Bearer <API key>'"
        )
    try:
        return await keys.authenticate(token)
    except HeliosError:
        AUTH_FAILURES.labels("grpc").inc()
        raise
