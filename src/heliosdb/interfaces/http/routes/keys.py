"""Admin-only API key management: /keys."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from heliosdb.interfaces.http.auth import AdminPrincipal, ServicesDep
from heliosdb.interfaces.http.responses import json_response
from heliosdb.security.apikeys import KeyKind

router = APIRouter(tags=["keys"])


class CreateKeyRequest(BaseModel):
    # no NUL: the engine's text cannot hold one
    name: str = Field(min_length=1, max_length=200, pattern="^[^\x00]*$")
    kind: Literal["secret", "public", "test"] = Field(
        "secret", description="secret: read-write, public: read-only, test: development only."
    )
    admin: bool = False
    tier: Literal["free", "developer", "professional", "enterprise"] = "developer"
    expires_in_seconds: float | None = Field(
        None, gt=0, description="The key stops authenticating this many seconds from now."
    )


@router.post("/keys", status_code=201, summary="Create an API key (shown once)")
async def create_key(body: CreateKeyRequest, _: AdminPrincipal, services: ServicesDep) -> Response:
    created = await services.keys.create(
        body.name,
        KeyKind(body.kind),
        is_admin=body.admin,
        tier=body.tier,
        expires_in_seconds=body.expires_in_seconds,
    )
    return json_response(
        {
            "id": created.id,
            "key": created.key,
            "name": created.name,
            "kind": created.kind.value,
            "admin": created.is_admin,
            "tier": created.tier,
            "expires_at": created.expires_at,
        },
        status=201,
    )


@router.get("/keys", summary="List API keys (never the keys themselves)")
async def list_keys(_: AdminPrincipal, services: ServicesDep) -> Response:
    return json_response({"keys": await services.keys.list()})


@router.delete("/keys/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: str, _: AdminPrincipal, services: ServicesDep) -> Response:
    await services.keys.revoke(key_id)
    return json_response({"id": key_id, "revoked": True})
