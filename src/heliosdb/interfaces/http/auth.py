"""Credentials on HTTP: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

:func:`principal_from_headers` is the one place a request's credentials become a
Principal; the FastAPI dependency below and the pure-ASGI ``POST /query`` route
(routes/query.py) both call it, so a new kind of credential goes there once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from heliosdb.errors import HeliosError, unauthenticated
from heliosdb.observability.metrics import AUTH_FAILURES
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services
from heliosdb.services.keys import require_admin

# Declared for the OpenAPI document (the "Authorize" button); the headers themselves are
# read by principal_from_headers.
_bearer = HTTPBearer(auto_error=False, description="An API key (hdb_sk_, hdb_pk_, hdb_test_).")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_AUTH_FAILURES = AUTH_FAILURES.labels("http")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain-def dependency on a worker thread, and that
    # hop (plus the GIL hand-off it causes) cost more than the whole query.
    return services_of(request)


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """The presented credential: a Bearer token first, else X-API-Key (case-insensitive keys)."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return headers.get("x-api-key") or None


def recent_principal(services: Services, headers: Mapping[str, str]) -> Principal | None:
    """The principal of credentials authenticated a moment ago (ApiKeys.recent), without a
    coroutine; None: :func:`principal_from_headers` decides (and counts a failure)."""
    token = token_from_headers(headers)
    return services.keys.recent(token.strip()) if token else None


async def principal_from_headers(services: Services, headers: Mapping[str, str]) -> Principal:
    """The principal behind a request's headers, or UNAUTHENTICATED (counted in metrics)."""
    token = token_from_headers(headers)
    if not token:
        _AUTH_FAILURES.inc()
        raise unauthenticated("missing credentials: send Authorization: Bearer <key> or X-API-Key")
    token = token.strip()
    principal = services.keys.recent(token)
    if principal is not None:
        return principal
    try:
        return await services.keys.authenticate(token)
    except HeliosError:
        _AUTH_FAILURES.inc()
        raise


async def authenticate(
    request: Request,
    _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    _api_key_doc: Annotated[str | None, Security(_api_key)],
) -> Principal:
    return await principal_from_headers(services_of(request), request.headers)


async def authenticate_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    require_admin(principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
AdminPrincipal = Annotated[Principal, Depends(authenticate_admin)]
ServicesDep = Annotated[Services, Depends(_services)]
