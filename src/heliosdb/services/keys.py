"""API keys: create, list, revoke, and turn a presented key into a Principal.

Verified keys are cached for a few seconds so a request does not cost an extra engine
round trip; a revoke on this node evicts at once, on other nodes within the TTL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from heliosdb.engine import Access, Engine
from heliosdb.errors import ErrorCode, HeliosError, invalid, not_found, unauthenticated
from heliosdb.security.apikeys import (
    MAX_KEY_LENGTH,
    KeyKind,
    display_form,
    generate_key,
    hash_key,
    kind_of,
)
from heliosdb.security.principals import Principal, PrincipalKind
from heliosdb.settings import Environment

CACHE_TTL_SECONDS = 5.0
LAST_USED_EVERY_SECONDS = 60.0
TIERS = ("free", "developer", "professional", "enterprise")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    key: str  # shown once, never stored
    name: str
    kind: KeyKind
    is_admin: bool
    tier: str


class ApiKeys:
    def __init__(self, engine: Engine, environment: Environment) -> None:
        self.engine = engine
        self.environment = environment
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._last_used: dict[str, float] = {}

    async def create(
        self, name: str, kind: KeyKind, *, is_admin: bool = False, tier: str = "developer"
    ) -> CreatedKey:
        if not name or len(name) > 200:
            raise invalid("a key needs a name of 1 to 200 characters")
        if tier not in TIERS:
            raise invalid(f"tier must be one of {', '.join(TIERS)}")
        if is_admin and kind is KeyKind.PUBLIC:
            raise invalid("an admin key must be a secret (read-write) key")
        key = generate_key(kind)
        async with self.engine.connection(Access.SYSTEM) as conn:
            key_id = await conn.fetchval(
                "INSERT INTO helios.api_keys (name, kind, key_hash, display, is_admin, tier) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id::text",
                name, kind.value, hash_key(key), display_form(key), is_admin, tier,
            )  # fmt: skip
        return CreatedKey(key_id, key, name, kind, is_admin, tier)

    async def list(self) -> list[dict[str, Any]]:
        async with self.engine.connection(Access.SYSTEM) as conn:
            rows = await conn.fetch(
                "SELECT id::text, name, kind, display, is_admin, tier, created_at, "
                "revoked_at, last_used_at FROM helios.api_keys ORDER BY created_at, id"
            )
        return [dict(r) for r in rows]

    async def revoke(self, key_id: str) -> None:
        async with self.engine.connection(Access.SYSTEM) as conn:
            revoked = await conn.fetchval(
                "UPDATE helios.api_keys SET revoked_at = now() "
                "WHERE id::text = $1 AND revoked_at IS NULL RETURNING key_hash",
                key_id,
            )
        if revoked is None:
            raise not_found(f"no active API key with id {key_id}")
        self._cache.pop(bytes(revoked), None)

    async def has_admin(self) -> bool:
        async with self.engine.connection(Access.SYSTEM) as conn:
            return bool(
                await conn.fetchval(
                    "SELECT 1 FROM helios.api_keys WHERE is_admin AND revoked_at IS NULL LIMIT 1"
                )
            )

    async def authenticate(self, key: str) -> Principal:
        """The principal behind ``key``, or UNAUTHENTICATED without saying which part failed."""
        kind = kind_of(key)
        if kind is None or len(key) > MAX_KEY_LENGTH:
            raise unauthenticated("invalid API key")
        if kind is KeyKind.TEST and self.environment is Environment.PRODUCTION:
            raise unauthenticated(
                "test keys (hdb_test_) are accepted only when the node runs in the "
                "development or test environment"
            )
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "SELECT id::text, name, kind, is_admin, tier FROM helios.api_keys "
                "WHERE key_hash = $1 AND revoked_at IS NULL",
                digest,
            )
            if row is None:
                self._cache.pop(digest, None)
                raise unauthenticated("invalid API key")
            if (
                now - self._last_used.get(row["id"], -LAST_USED_EVERY_SECONDS)
                >= LAST_USED_EVERY_SECONDS
            ):
                self._last_used[row["id"]] = now
                await conn.execute(
                    "UPDATE helios.api_keys SET last_used_at = now() WHERE id::text = $1", row["id"]
                )
        principal = Principal(
            id=row["id"],
            name=row["name"],
            kind=PrincipalKind.API_KEY,
            access=Access.READ_ONLY if row["kind"] == KeyKind.PUBLIC else Access.READ_WRITE,
            is_admin=row["is_admin"],
            tier=row["tier"],
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL_SECONDS, principal)
        return principal


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise HeliosError(ErrorCode.PERMISSION_DENIED, "this operation needs an admin key")
