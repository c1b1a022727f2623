"""Credentials on HTTP: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from heliosdb.errors import HeliosError, unauthenticated
from heliosdb.observability.metrics import AUTH_FAILURES
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services
from heliosdb.services.keys import require_admin

_bearer = HTTPBearer(auto_error=False, description="An API key (hdb_sk_, hdb_pk_, hdb_test_).")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Principal:
    token = bearer.credentials if bearer is not None else api_key
    if not token:
        AUTH_FAILURES.labels("http").inc()
        raise unauthenticated("missing credentials: send Authorization: Bearer <key> or X-API-Key")
    try:
        return await services_of(request).keys.authenticate(token.strip())
    except HeliosError:
        AUTH_FAILURES.labels("http").inc()
        raise


async def authenticate_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    require_admin(principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
AdminPrincipal = Annotated[Principal, Depends(authenticate_admin)]
ServicesDep = Annotated[Services, Depends(services_of)]
