"""API keys: create, list, revoke, and turn a presented key into a Principal.

Verified keys are cached for a few seconds (never past a key's expiry) so a request does
not cost an extra engine round trip; a revoke evicts at once on every node (NOTIFY).
A key may carry an expiry (``expires_at``): past it, it authenticates nowhere.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
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
from heliosdb.security.scram import (
    SHA1_MECHANISM,
    Verifier,
    make_verifier,
    mongodb_sha1_password,
)
from heliosdb.settings import Environment

CACHE_TTL_SECONDS = 5.0
# A hot path (REST) checks the last second's verified keys before hashing and awaiting
# authenticate(): ApiKeys.recent.
RECENT_SECONDS = 1.0
_RECENT_LIMIT = 1_000
# Revokes are announced on this channel so every node sharing the engine drops its cached
# keys at once; the TTL above only bounds what a lost notification can cost.
REVOKED_CHANNEL = "helios_api_key_revoked"
LAST_USED_EVERY_SECONDS = 60.0
TIERS = ("free", "developer", "professional", "enterprise")
# Keys carry 240 random bits, so one public salt for all of them costs nothing against
# guessing; it is what lets a SCRAM server announce the salt before it knows the key.
API_KEY_SCRAM_SALT = b"heliosdb-api-key-scram-v1"
API_KEY_SCRAM_ITERATIONS = 4096
API_KEY_USER = "apikey"
API_KEY_SCRAM_SHA1_ITERATIONS = 10000  # MongoDB's own count for SCRAM-SHA-1


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    key: str  # shown once, never stored
    name: str
    kind: KeyKind
    is_admin: bool
    tier: str
    expires_at: dt.datetime | None = None


class ApiKeys:
    def __init__(self, engine: Engine, environment: Environment) -> None:
        self.engine = engine
        self.environment = environment
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._last_used: dict[str, float] = {}
        # key -> (until, the revocation count when it was verified, principal); any revoke
        # this process hears of (its own, or NOTIFY from any node or worker) moves
        # ``revocations`` and so forgets them all.
        self._recent: dict[str, tuple[float, int, Principal]] = {}
        self._scram: list[tuple[Verifier, Principal]] = []
        self._scram_loaded_at = 0.0
        self._scram_loading = asyncio.Lock()
        self._scram_sha1: list[tuple[Verifier, Principal]] = []
        self._scram_sha1_loaded_at = 0.0
        self._listener: Any = None
        # Bumped on every revoke seen (here or by NOTIFY): long-lived sessions (WebSocket)
        # re-check their key when it moves instead of polling the engine.
        self.revocations = 0

    async def start(self) -> None:
        """Listen for revokes made on any node (or by `heliosdb keys revoke`)."""
        self._listener = await self.engine.dedicated("heliosdb-keys")
        await self._listener.add_listener(REVOKED_CHANNEL, self._on_revoked)

    async def stop(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()

    def _on_revoked(self, *_: object) -> None:
        # The payload carries nothing: any engine role may LISTEN, so say only that
        # something was revoked, and forget every cached key (revokes are rare).
        self.forget_cached()

    def forget_cached(self) -> None:
        self.revocations += 1
        self._cache.clear()
        self._scram_loaded_at = 0.0
        self._scram_sha1_loaded_at = 0.0

    async def create(
        self,
        name: str,
        kind: KeyKind,
        *,
        is_admin: bool = False,
        tier: str = "developer",
        expires_in_seconds: float | None = None,
    ) -> CreatedKey:
        if not name or len(name) > 200:
            raise invalid("a key needs a name of 1 to 200 characters")
        if tier not in TIERS:
            raise invalid(f"tier must be one of {', '.join(TIERS)}")
        if is_admin and kind is KeyKind.PUBLIC:
            raise invalid("an admin key must be a secret (read-write) key")
        if expires_in_seconds is not None and not 0 < expires_in_seconds <= 10 * 365 * 86400:
            raise invalid("expires_in_seconds must be between 0 and ten years")
        key = generate_key(kind)
        verifier = scram_verifier_for_key(key).encode()
        sha1_verifier = scram_verifier_for_key(key, SHA1_MECHANISM).encode()
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "INSERT INTO helios.api_keys (name, kind, key_hash, display, is_admin, tier, "
                "scram_verifier, scram_sha1_verifier, expires_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                "now() + make_interval(secs => $9::float8)) RETURNING id::text, expires_at",
                name, kind.value, hash_key(key), display_form(key), is_admin, tier, verifier,
                sha1_verifier, expires_in_seconds,
            )  # fmt: skip
        assert row is not None
        self._scram_loaded_at = 0.0
        self._scram_sha1_loaded_at = 0.0
        return CreatedKey(row["id"], key, name, kind, is_admin, tier, row["expires_at"])

    async def list(self) -> list[dict[str, Any]]:
        async with self.engine.connection(Access.SYSTEM) as conn:
            rows = await conn.fetch(
                "SELECT id::text, name, kind, display, is_admin, tier, created_at, "
                "revoked_at, last_used_at, expires_at FROM helios.api_keys "
                "ORDER BY created_at, id"
            )
        return [dict(r) for r in rows]

    async def revoke(self, key_id: str) -> None:
        async with self.engine.connection(Access.SYSTEM) as conn:
            revoked = await conn.fetchval(
                "UPDATE helios.api_keys SET revoked_at = now() "
                "WHERE id::text = $1 AND revoked_at IS NULL RETURNING key_hash",
                key_id,
            )
            if revoked is not None:
                await conn.execute("SELECT pg_notify($1, '')", REVOKED_CHANNEL)
        if revoked is None:
            raise not_found(f"no active API key with id {key_id}")
        self._cache.pop(bytes(revoked), None)
        self.revocations += 1
        self._scram = [c for c in self._scram if c[1].id != key_id]
        self._scram_sha1 = [c for c in self._scram_sha1 if c[1].id != key_id]

    async def has_admin(self) -> bool:
        async with self.engine.connection(Access.SYSTEM) as conn:
            return bool(
                await conn.fetchval(
                    "SELECT 1 FROM helios.api_keys WHERE is_admin AND revoked_at IS NULL "
                    "AND (expires_at IS NULL OR expires_at > now()) LIMIT 1"
                )
            )

    def recent(self, key: str) -> Principal | None:
        """The principal ``key`` authenticated as in the last second, if no revoke has been
        heard of since and it has not expired: no hashing, no await."""
        hit = self._recent.get(key)
        if hit is not None and hit[0] > time.monotonic() and hit[1] == self.revocations:
            return hit[2]
        return None

    async def authenticate(self, key: str) -> Principal:
        """The principal behind ``key``, or UNAUTHENTICATED without saying which part failed."""
        revocations = self.revocations  # a revoke while we wait must not be remembered past
        principal = await self._authenticate(key)
        until = time.monotonic() + RECENT_SECONDS
        if principal.expires_at is not None:
            left = (principal.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
            until = min(until, time.monotonic() + left)
        if len(self._recent) >= _RECENT_LIMIT:
            self._recent.clear()
        self._recent[key] = (until, revocations, principal)
        return principal

    async def _authenticate(self, key: str) -> Principal:
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
                "SELECT id::text, name, kind, is_admin, tier, expires_at, "
                "extract(epoch FROM expires_at - now())::float8 AS expires_in "
                "FROM helios.api_keys WHERE key_hash = $1 AND revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > now())",
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
        principal = _principal(row)
        if len(self._cache) > 10_000:
            self._cache.clear()
        ttl = CACHE_TTL_SECONDS
        if row["expires_in"] is not None:
            ttl = min(ttl, row["expires_in"])
        self._cache[digest] = (now + ttl, principal)
        return principal

    async def scram_candidates(
        self, *, refresh: bool = False, mechanism: str = "SCRAM-SHA-256"
    ) -> builtins.list[tuple[Verifier, Principal]]:
        """Every usable key's SCRAM verifier (all share ``API_KEY_SCRAM_SALT``).

        A SCRAM proof cannot say which key it was made with, so a wire-protocol login
        with a key as its password is checked against each active key's verifier: one
        HMAC per key. The list is cached; ``refresh`` reloads it when no cached verifier
        matched (at most once a second; a caller inside that second waits for the next
        load), so a key made on any node or process logs in at once, and a revoked one
        stops within ``CACHE_TTL_SECONDS`` on other nodes.
        """
        sha1 = mechanism == SHA1_MECHANISM
        asked = time.monotonic()
        loaded_at = self._scram_sha1_loaded_at if sha1 else self._scram_loaded_at
        if refresh:
            # A login that matched nothing cached may use a key made since the last load
            # (on another node or process). Reloads stay at most one a second, so failed
            # logins cannot keep the engine busy; a login inside that second waits for the
            # next load rather than being refused.
            await asyncio.sleep(max(0.0, loaded_at + 1.0 - asked))
        elif asked - loaded_at <= CACHE_TTL_SECONDS:
            return self._scram_sha1 if sha1 else self._scram
        async with self._scram_loading:
            loaded_at = self._scram_sha1_loaded_at if sha1 else self._scram_loaded_at
            if loaded_at >= asked:  # someone else's load began after we asked
                return self._scram_sha1 if sha1 else self._scram
            return await self._load_scram(sha1)

    async def _load_scram(self, sha1: bool) -> builtins.list[tuple[Verifier, Principal]]:
        now = time.monotonic()
        column = "scram_sha1_verifier" if sha1 else "scram_verifier"
        async with self.engine.connection(Access.SYSTEM) as conn:
            rows = await conn.fetch(
                f"SELECT id::text, name, kind, is_admin, tier, expires_at, "  # noqa: S608
                f"{column} AS scram_verifier "
                f"FROM helios.api_keys WHERE revoked_at IS NULL AND {column} IS NOT NULL "
                "AND (expires_at IS NULL OR expires_at > now())"
            )
        candidates = []
        for row in rows:
            if row["kind"] == KeyKind.TEST and self.environment is Environment.PRODUCTION:
                continue
            candidates.append((Verifier.parse(row["scram_verifier"]), _principal(row)))
        if sha1:
            self._scram_sha1, self._scram_sha1_loaded_at = candidates, now
        else:
            self._scram, self._scram_loaded_at = candidates, now
        return candidates


def _principal(row: Any) -> Principal:
    """The principal of a ``helios.api_keys`` row (id, name, kind, is_admin, tier,
    expires_at)."""
    return Principal(
        id=row["id"],
        name=row["name"],
        kind=PrincipalKind.API_KEY,
        access=Access.READ_ONLY if row["kind"] == KeyKind.PUBLIC else Access.READ_WRITE,
        is_admin=row["is_admin"],
        tier=row["tier"],
        expires_at=row["expires_at"],
    )


def scram_verifier_for_key(key: str, mechanism: str = "SCRAM-SHA-256") -> Verifier:
    """The SCRAM verifier of ``key`` used as a password, with the shared salt. For
    SCRAM-SHA-1 (MongoDB) the password is MongoDB's digest for the user ``apikey``."""
    if mechanism == SHA1_MECHANISM:
        return make_verifier(
            mongodb_sha1_password(API_KEY_USER, key),
            salt=API_KEY_SCRAM_SALT,
            iterations=API_KEY_SCRAM_SHA1_ITERATIONS,
            mechanism=SHA1_MECHANISM,
        )
    return make_verifier(key, salt=API_KEY_SCRAM_SALT, iterations=API_KEY_SCRAM_ITERATIONS)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise HeliosError(ErrorCode.PERMISSION_DENIED, "this operation needs an admin key")
