"""HeliosDB users: named accounts with a password, for wire-protocol logins.

A user's password is stored only as a SCRAM-SHA-256 verifier (PostgreSQL's format, in
``helios.users.password_hash``), so a SCRAM server can check it without ever holding the
password. Read-write or read-only, like API keys; the engine role follows from that.
"""

from __future__ import annotations

import re
import time
from typing import Any

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.errors import ErrorCode, HeliosError, invalid, not_found
from heliosdb.security.md5 import md5_verifier
from heliosdb.security.principals import Principal, PrincipalKind
from heliosdb.security.scram import (
    SHA1_MECHANISM,
    ScramError,
    Verifier,
    make_verifier,
    mongodb_sha1_password,
)

USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]{0,62}$")
MIN_PASSWORD_LENGTH = 8
CACHE_TTL_SECONDS = 5.0
# Names a user may not take: they mean "the password is an API key".
RESERVED = frozenset({"apikey"})


class Users:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, tuple[Verifier, Principal] | None]] = {}

    async def create(
        self,
        username: str,
        password: str,
        *,
        access: Access = Access.READ_WRITE,
        md5: bool = False,
    ) -> Principal:
        """``md5``: also store an MD5 verifier, for PostgreSQL clients that only speak MD5
        (the gateway's ``postgres.auth_method: md5``)."""
        if not USERNAME.match(username) or username.lower() in RESERVED:
            raise invalid(
                "a user name is 1 to 63 letters, digits, _ . @ -, starting with a letter or _"
                " (and not 'apikey')"
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise invalid(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        if access not in (Access.READ_WRITE, Access.READ_ONLY):
            raise invalid("access is read_write or read_only")
        verifier = make_verifier(password).encode()
        try:
            async with self.engine.connection(Access.SYSTEM) as conn:
                user_id = await conn.fetchval(
                    "INSERT INTO helios.users (username, password_hash, access, "
                    "scram_sha1_verifier, md5_verifier) VALUES ($1, $2, $3, $4, $5) "
                    "RETURNING id::text",
                    username,
                    verifier,
                    access.value,
                    sha1_verifier(username, password),
                    md5_verifier(password, username) if md5 else None,
                )
        except asyncpg.UniqueViolationError:
            raise HeliosError(ErrorCode.ALREADY_EXISTS, f"user {username} already exists") from None
        self._cache.pop(username, None)
        return Principal(id=user_id, name=username, kind=PrincipalKind.USER, access=access)

    async def set_password(self, username: str, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise invalid(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        async with self.engine.connection(Access.SYSTEM) as conn:
            done = await conn.fetchval(
                "UPDATE helios.users SET password_hash = $2, scram_sha1_verifier = $3, "
                "md5_verifier = CASE WHEN md5_verifier IS NULL THEN NULL ELSE $4 END "
                "WHERE username = $1 RETURNING 1",
                username,
                make_verifier(password).encode(),
                sha1_verifier(username, password),
                md5_verifier(password, username),
            )
        if done is None:
            raise not_found(f"no user {username}")
        self._cache.pop(username, None)

    async def delete(self, username: str) -> None:
        async with self.engine.connection(Access.SYSTEM) as conn:
            done = await conn.fetchval(
                "DELETE FROM helios.users WHERE username = $1 RETURNING 1", username
            )
        if done is None:
            raise not_found(f"no user {username}")
        self._cache.pop(username, None)

    async def list(self) -> list[dict[str, Any]]:
        async with self.engine.connection(Access.SYSTEM) as conn:
            rows = await conn.fetch(
                "SELECT id::text, username, access, is_admin, created_at FROM helios.users "
                "ORDER BY username"
            )
        return [dict(r) for r in rows]

    async def verifier(self, username: str) -> tuple[Verifier, Principal] | None:
        """The user's SCRAM verifier and principal, or None if there is no such user."""
        now = time.monotonic()
        cached = self._cache.get(username)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "SELECT id::text, username, password_hash, access, is_admin FROM helios.users "
                "WHERE username = $1",
                username,
            )
        found: tuple[Verifier, Principal] | None = None
        if row is not None:
            try:
                verifier = Verifier.parse(row["password_hash"])
            except ScramError:
                verifier = None
            if verifier is not None:
                principal = _principal(row)
                found = (verifier, principal)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[username] = (now + CACHE_TTL_SECONDS, found)
        return found

    async def md5_entry(self, username: str) -> tuple[str | None, Principal] | None:
        """The user's MD5 verifier (None: the user has only SCRAM verifiers) and principal,
        or None if there is no such user."""
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "SELECT id::text, username, md5_verifier, access, is_admin "
                "FROM helios.users WHERE username = $1",
                username,
            )
        if row is None:
            return None
        return row["md5_verifier"], _principal(row)

    async def sha1_verifier_of(self, username: str) -> tuple[Verifier, Principal] | None:
        """The user's SCRAM-SHA-1 verifier (MongoDB logins) and principal, or None."""
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "SELECT id::text, username, scram_sha1_verifier, access, is_admin "
                "FROM helios.users WHERE username = $1 AND scram_sha1_verifier IS NOT NULL",
                username,
            )
        if row is None:
            return None
        return Verifier.parse(row["scram_sha1_verifier"]), _principal(row)


def _principal(row: Any) -> Principal:
    """The principal of a ``helios.users`` row (id, username, access, is_admin)."""
    return Principal(
        id=row["id"],
        name=row["username"],
        kind=PrincipalKind.USER,
        access=Access(row["access"]),
        is_admin=row["is_admin"],
    )


def sha1_verifier(username: str, password: str) -> str:
    """The SCRAM-SHA-1 verifier MongoDB drivers authenticate against (10000 iterations,
    MongoDB's count, over its hex(md5("<user>:mongo:<password>")) digest)."""
    return make_verifier(
        mongodb_sha1_password(username, password), iterations=10000, mechanism=SHA1_MECHANISM
    ).encode()
