"""Engine roles that carry client privileges.

A principal's statements run on a connection *logged in* as one of these roles, so
the engine itself enforces what the principal may do; ``SET ROLE`` would not do,
because a client on the PostgreSQL wire could undo it. Neither role is a superuser
and neither can become one (they are members of no role).

- ``helios_readwrite``: reads and writes user data, creates tables, schemas, temp tables.
- ``helios_readonly``: reads user data only. It owns nothing, has no TEMP or CREATE,
  cannot execute functions that ``helios_readwrite`` creates unless granted, cannot
  touch large objects, and its transactions default to read-only.

Their passwords are random, kept in ``helios.engine_roles`` (readable by the engine
superuser only) so every node sharing the engine can log in as them.
"""

from __future__ import annotations

import enum
import secrets

import asyncpg

from heliosdb.engine.quoting import quote_ident


class Access(enum.StrEnum):
    READ_WRITE = "read_write"
    READ_ONLY = "read_only"
    SYSTEM = "system"  # HeliosDB's own bookkeeping; never runs client text


ROLE_FOR_ACCESS = {Access.READ_WRITE: "helios_readwrite", Access.READ_ONLY: "helios_readonly"}
RW = ROLE_FOR_ACCESS[Access.READ_WRITE]
RO = ROLE_FOR_ACCESS[Access.READ_ONLY]

# Server functions that write large objects: PUBLIC may execute them by default.
_LARGE_OBJECT_WRITERS = (
    "lo_create(oid)",
    "lo_creat(integer)",
    "lo_from_bytea(oid, bytea)",
    "lo_put(oid, bigint, bytea)",
    "lowrite(integer, bytea)",
    "lo_unlink(oid)",
    "lo_truncate(integer, integer)",
    "lo_truncate64(integer, bigint)",
)


def _grants(database: str) -> list[str]:
    db = quote_ident(database)
    statements = [
        "REVOKE ALL ON SCHEMA helios FROM PUBLIC",
        f"REVOKE TEMPORARY, CREATE ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {db} TO {RW}",
        f"GRANT CONNECT ON DATABASE {db} TO {RO}",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {RW}",
        f"GRANT USAGE ON SCHEMA public TO {RO}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {RW} GRANT SELECT ON TABLES TO {RO}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {RW} GRANT SELECT ON SEQUENCES TO {RO}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {RW} GRANT USAGE ON SCHEMAS TO {RO}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {RW} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        f"ALTER ROLE {RO} SET default_transaction_read_only = on",
    ]
    for function in _LARGE_OBJECT_WRITERS:
        statements.append(f"REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC")
        statements.append(f"GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO {RW}")
    return statements


async def ensure_roles(conn: asyncpg.Connection, database: str) -> dict[Access, str]:
    """Create the roles and grants (idempotent); return each role's login password."""
    passwords: dict[Access, str] = {}
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('helios.roles'))")
        for access, role in ROLE_FOR_ACCESS.items():
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await conn.execute(
                    f"CREATE ROLE {quote_ident(role)} LOGIN NOSUPERUSER NOCREATEDB "
                    "NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
                )
            password = await conn.fetchval(
                "SELECT password FROM helios.engine_roles WHERE name = $1", role
            )
            if password is None or not exists:
                password = secrets.token_urlsafe(32)
                await conn.execute("SELECT helios.set_role_password($1, $2)", role, password)
                await conn.execute(
                    "INSERT INTO helios.engine_roles (name, password) VALUES ($1, $2) "
                    "ON CONFLICT (name) DO UPDATE SET password = EXCLUDED.password",
                    role,
                    password,
                )
            passwords[access] = password
        is_superuser = await conn.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        for statement in _grants(database):
            if (
                statement.startswith(("REVOKE EXECUTE ON FUNCTION", "GRANT EXECUTE ON FUNCTION"))
                and not is_superuser
            ):
                continue  # an external engine's owner may not change pg_catalog grants
            await conn.execute(statement)
    return passwords
