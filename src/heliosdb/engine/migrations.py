"""Versioned migrations of the ``helios`` system schema.

They run on every start, under an advisory lock so that nodes starting together over
one engine take turns, and each version runs once: running them twice is a no-op.
Append new versions; never edit an applied one.
"""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger("heliosdb.engine.migrations")

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "system schema: keys, users, settings, engine roles",
        """
        CREATE TABLE helios.engine_roles (
            name text PRIMARY KEY,
            password text NOT NULL
        );
        CREATE TABLE helios.api_keys (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('secret', 'public', 'test')),
            key_hash bytea NOT NULL UNIQUE,
            display text NOT NULL,
            is_admin boolean NOT NULL DEFAULT false,
            tier text NOT NULL DEFAULT 'developer',
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            last_used_at timestamptz
        );
        CREATE TABLE helios.users (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            username text NOT NULL UNIQUE,
            password_hash text NOT NULL,
            access text NOT NULL CHECK (access IN ('read_write', 'read_only')),
            is_admin boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE helios.settings (
            key text PRIMARY KEY,
            value jsonb NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        -- Utility statements take no parameters, so the one place a password reaches
        -- ALTER ROLE is format('%L') inside the engine.
        CREATE FUNCTION helios.set_role_password(role_name text, new_password text)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            EXECUTE format('ALTER ROLE %I WITH LOGIN PASSWORD %L', role_name, new_password);
        END $$;
        REVOKE ALL ON FUNCTION helios.set_role_password(text, text) FROM PUBLIC;
        """,
    ),
    (
        2,
        "api keys: SCRAM-SHA-256 verifiers for wire-protocol password logins",
        """
        -- A key used as a password in a SCRAM exchange is checked against this verifier
        -- (PostgreSQL's text format, shared salt); keys made before have none.
        ALTER TABLE helios.api_keys ADD COLUMN scram_verifier text;
        """,
    ),
    (
        3,
        "vector indexes: one row per index; the vectors live in helios_vectors.<name>",
        """
        CREATE TABLE helios.vector_indexes (
            name text PRIMARY KEY,
            dimension integer NOT NULL CHECK (dimension BETWEEN 1 AND 16000),
            metric text NOT NULL CHECK (metric IN ('cosine', 'l2', 'inner_product')),
            m integer NOT NULL,
            ef_construction integer NOT NULL,
            ef_search integer NOT NULL,
            metadata_fields jsonb,
            created_by text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        4,
        "key-value (Redis) data: schema helios_kv, keys plus one item table per type",
        """
        CREATE SCHEMA helios_kv;
        CREATE SEQUENCE helios_kv.versions;
        CREATE TABLE helios_kv.keys (
            db smallint NOT NULL,
            key bytea NOT NULL,
            type text NOT NULL CHECK (type IN ('string', 'hash', 'list', 'set', 'zset')),
            value bytea,
            expires_at_ms bigint,
            version bigint NOT NULL DEFAULT nextval('helios_kv.versions'),
            key_hash bigint NOT NULL
                GENERATED ALWAYS AS (('x' || substr(md5(key), 1, 16))::bit(64)::bigint) STORED,
            PRIMARY KEY (db, key)
        );
        CREATE INDEX keys_by_hash ON helios_kv.keys (db, key_hash);
        CREATE INDEX keys_by_expiry ON helios_kv.keys (expires_at_ms)
            WHERE expires_at_ms IS NOT NULL;
        CREATE TABLE helios_kv.hashes (
            db smallint NOT NULL, key bytea NOT NULL, field bytea NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (db, key, field),
            FOREIGN KEY (db, key) REFERENCES helios_kv.keys ON DELETE CASCADE ON UPDATE CASCADE
        );
        CREATE TABLE helios_kv.lists (
            db smallint NOT NULL, key bytea NOT NULL, pos bigint NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (db, key, pos),
            FOREIGN KEY (db, key) REFERENCES helios_kv.keys ON DELETE CASCADE ON UPDATE CASCADE
        );
        CREATE TABLE helios_kv.sets (
            db smallint NOT NULL, key bytea NOT NULL, member bytea NOT NULL,
            PRIMARY KEY (db, key, member),
            FOREIGN KEY (db, key) REFERENCES helios_kv.keys ON DELETE CASCADE ON UPDATE CASCADE
        );
        CREATE TABLE helios_kv.zsets (
            db smallint NOT NULL, key bytea NOT NULL, member bytea NOT NULL,
            score double precision NOT NULL,
            PRIMARY KEY (db, key, member),
            FOREIGN KEY (db, key) REFERENCES helios_kv.keys ON DELETE CASCADE ON UPDATE CASCADE
        );
        CREATE INDEX zsets_by_score ON helios_kv.zsets (db, key, score, member);
        """,
    ),
    (
        5,
        "realtime: captured change events, capture progress, async query results",
        """
        -- One row per committed row change, written in commit order by the capture
        -- leader (services/changes/capture.py); position is dense and monotonic.
        CREATE TABLE helios.change_events (
            position bigint PRIMARY KEY,
            commit_lsn pg_lsn NOT NULL,
            commit_time timestamptz NOT NULL,
            xid bigint NOT NULL,
            schema_name text NOT NULL,
            table_name text NOT NULL,
            event_type text NOT NULL,
            payload json NOT NULL
        );
        CREATE INDEX change_events_commit_time ON helios.change_events USING brin (commit_time);
        CREATE TABLE helios.change_capture (
            slot_name text PRIMARY KEY,
            last_lsn pg_lsn NOT NULL DEFAULT '0/0',
            last_position bigint NOT NULL DEFAULT 0,
            pruned_through bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE helios.async_queries (
            id uuid PRIMARY KEY,
            principal_id text NOT NULL,
            sql text NOT NULL,
            params json NOT NULL,
            status text NOT NULL
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
            node text,
            backend_pid integer,
            backend_start timestamptz,
            submitted_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            expires_at timestamptz,
            result json,
            error json
        );
        CREATE INDEX async_queries_expires_at ON helios.async_queries (expires_at);
        """,
    ),
    (
        6,
        "api keys and users: SCRAM-SHA-1 verifiers for MongoDB logins",
        """
        -- MongoDB's SCRAM-SHA-1 runs over hex(md5("<user>:mongo:<password>")), which a
        -- SCRAM-SHA-256 verifier cannot answer; keys and users made before have none.
        ALTER TABLE helios.api_keys ADD COLUMN scram_sha1_verifier text;
        ALTER TABLE helios.users ADD COLUMN scram_sha1_verifier text;
        """,
    ),
    (
        7,
        "api keys: an optional expiry",
        """
        -- A key past expires_at authenticates nowhere; open WebSocket sessions are told
        -- and closed (services/keys.py, interfaces/websocket/connection.py).
        ALTER TABLE helios.api_keys ADD COLUMN expires_at timestamptz;
        """,
    ),
    (
        8,
        "users: MD5 verifiers; cross-node cancel requests of the PostgreSQL gateway",
        """
        -- PostgreSQL's md5 + hex(md5(password || user)), only for users created with --md5
        -- (the PostgreSQL gateway's postgres.auth_method: md5). NULL: SCRAM only.
        ALTER TABLE helios.users ADD COLUMN md5_verifier text;
        -- A CancelRequest that reached a node not holding the session: every node reads
        -- it on NOTIFY helios_pg_cancel (payload: the id only, since any role may LISTEN).
        CREATE TABLE helios.pg_cancel_requests (
            id bigserial PRIMARY KEY,
            pid integer NOT NULL,
            secret bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        9,
        "key-value: HSCAN/SSCAN/ZSCAN cursors in element-hash order; large pub/sub messages",
        """
        -- HSCAN/SSCAN/ZSCAN page a collection in the order of a 64-bit hash of the field or
        -- member (the cursor is the next hash), as SCAN does with keys.key_hash, so a cursor
        -- survives concurrent adds and removes (services/keyvalue/scans.py).
        CREATE INDEX hashes_by_hash ON helios_kv.hashes
            (db, key, (('x' || substr(md5(field), 1, 16))::bit(64)::bigint));
        CREATE INDEX sets_by_hash ON helios_kv.sets
            (db, key, (('x' || substr(md5(member), 1, 16))::bit(64)::bigint));
        CREATE INDEX zsets_by_hash ON helios_kv.zsets
            (db, key, (('x' || substr(md5(member), 1, 16))::bit(64)::bigint));
        -- A PUBLISH too big for a NOTIFY payload: the message is stored here and its id is
        -- notified; every node reads it by id; rows are swept after a minute.
        CREATE TABLE helios_kv.messages (
            id bigserial PRIMARY KEY,
            channel bytea NOT NULL,
            message bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        10,
        "key-value: pub/sub subscriptions of every node (PUBLISH counts receivers on all nodes)",
        """
        -- Each node with Redis subscribers keeps here how many of its clients listen to
        -- each channel and pattern, and beats every few seconds; rows of a node that stopped
        -- beating are ignored, then deleted (services/keyvalue/subscriptions.py).
        CREATE TABLE helios_kv.pubsub_nodes (
            node_id text PRIMARY KEY,
            seen_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE helios_kv.subscriptions (
            node_id text NOT NULL REFERENCES helios_kv.pubsub_nodes ON DELETE CASCADE,
            pattern boolean NOT NULL,
            name bytea NOT NULL,
            receivers integer NOT NULL CHECK (receivers > 0),
            PRIMARY KEY (node_id, pattern, name)
        );
        CREATE INDEX subscriptions_by_name ON helios_kv.subscriptions (name, node_id);
        """,
    ),
    (
        11,
        "vector indexes: ef_search may be unset (the search beam then follows top_k)",
        """
        -- NULL: the index sets no ef_search; each search uses one that follows its top_k
        -- (services/vectors.py default_ef_search). Indexes made before keep theirs.
        ALTER TABLE helios.vector_indexes ALTER COLUMN ef_search DROP NOT NULL;
        """,
    ),
]


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply every pending migration; return the versions applied now."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('helios.migrations'))")
        await conn.execute("CREATE SCHEMA IF NOT EXISTS helios")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS helios.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"] for r in await conn.fetch("SELECT version FROM helios.schema_migrations")
        }
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO helios.schema_migrations (version, name) VALUES ($1, $2)",
                version,
                name,
            )
            log.info("applied migration %d: %s", version, name)
            applied_now.append(version)
    return applied_now
