"""Versioned migrations of the ``helios`` system schema.

They run on every start, under an advisory lock so that nodes starting together over
one engine take turns, and each version runs once: running them twice is a no-op.
Append new versions; never edit an applied one.
"""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger("heliosdb.engine.migrations")

# Migration 16: helios_kv.add_group for groups of one type (all HSET, all SADD or all ZADD),
# one function per type: add_group runs the upserts of all three item tables every call.
_KV_ADD_ONE_TYPE = """
        CREATE FUNCTION helios_kv.add_{type}_group(
            p_db smallint[], p_key bytea[], p_type text[], e_slot integer[],
            e_element bytea[], e_value bytea[], e_score double precision[], p_now bigint,
            p_notify text
        ) RETURNS TABLE (slot integer, state text, added bytea[])
        LANGUAGE plpgsql AS $f$
        #variable_conflict use_column
        BEGIN
            PERFORM 1 FROM helios_kv.keys k JOIN unnest(p_db, p_key) AS q(db, key)
                ON k.db = q.db AND k.key = q.key ORDER BY k.db, k.key FOR UPDATE OF k;
            DELETE FROM helios_kv.keys k USING unnest(p_db, p_key) AS q(db, key)
                WHERE k.db = q.db AND k.key = q.key AND k.expires_at_ms <= p_now;
            RETURN QUERY
            WITH s AS (
                SELECT q.n::integer AS slot, q.db, q.key, k.type
                FROM unnest(p_db, p_key) WITH ORDINALITY AS q(db, key, n)
                LEFT JOIN helios_kv.keys k ON k.db = q.db AND k.key = q.key
            ), made AS (
                INSERT INTO helios_kv.keys (db, key, type)
                SELECT s.db, s.key, '{type}' FROM s WHERE s.type IS NULL
            ), touched AS (
                UPDATE helios_kv.keys k SET version = nextval('helios_kv.versions')
                FROM s WHERE s.type = '{type}' AND k.db = s.db AND k.key = s.key
            ), e AS (
                SELECT s.db, s.key, u.element, u.value, u.score
                FROM unnest(e_slot, e_element, e_value, e_score) AS u(slot, element, value, score)
                JOIN s ON s.slot = u.slot WHERE s.type IS NULL OR s.type = '{type}'
            ), news AS (
                INSERT INTO helios_kv.{table} AS t (db, key, {column}{extra})
                SELECT e.db, e.key, e.element{extra_value} FROM e
                ON CONFLICT (db, key, {column}) DO {conflict}
                RETURNING t.db, t.key, t.{column} AS element, {fresh} AS fresh
            )
            SELECT s.slot, coalesce(s.type, 'new'), ARRAY(
                SELECT news.element FROM news
                WHERE news.db = s.db AND news.key = s.key AND news.fresh)
            FROM s;
            IF p_notify IS NOT NULL THEN
                PERFORM pg_notify('helios_kv', p_notify);
            END IF;
        END
        $f$;
"""
_KV_ADD_TYPES = (
    dict(type="hash", table="hashes", column="field", extra=", value", extra_value=", e.value",
         conflict="UPDATE SET value = EXCLUDED.value", fresh="t.xmax = 0"),
    dict(type="set", table="sets", column="member", extra="", extra_value="",
         conflict="NOTHING", fresh="true"),
    dict(type="zset", table="zsets", column="member", extra=", score", extra_value=", e.score",
         conflict="UPDATE SET score = EXCLUDED.score", fresh="t.xmax = 0"),
)  # fmt: skip

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
    (
        12,
        "key-value: one-call group writes for LPUSH/RPUSH and HSET/SADD/ZADD (coalescer)",
        """
        -- The coalescer's group of many clients' pushes (or adds) is one call instead of a
        -- transaction of four to six statements (services/keyvalue/coalesce.py): lock the
        -- keys in order, drop the expired ones, create or touch the key rows, write the
        -- items. Keys of another type are left alone (their state tells the caller, which
        -- answers WRONGTYPE). p_notify, when set, is NOTIFYd on helios_kv (wakes BLPOP &
        -- co. on every node).
        CREATE FUNCTION helios_kv.push_group(
            p_db smallint[], p_key bytea[], i_slot integer[], i_left boolean[],
            i_value bytea[], p_now bigint, p_notify text
        ) RETURNS TABLE (slot integer, state text, lo bigint, hi bigint)
        LANGUAGE plpgsql AS $f$
        #variable_conflict use_column
        BEGIN
            PERFORM 1 FROM helios_kv.keys k JOIN unnest(p_db, p_key) AS q(db, key)
                ON k.db = q.db AND k.key = q.key ORDER BY k.db, k.key FOR UPDATE OF k;
            DELETE FROM helios_kv.keys k USING unnest(p_db, p_key) AS q(db, key)
                WHERE k.db = q.db AND k.key = q.key AND k.expires_at_ms <= p_now;
            RETURN QUERY
            WITH s AS (
                SELECT q.n::integer AS slot, q.db, q.key, k.type,
                    (SELECT l.pos FROM helios_kv.lists l WHERE l.db = q.db AND l.key = q.key
                     ORDER BY l.pos LIMIT 1) AS lo,
                    (SELECT l.pos FROM helios_kv.lists l WHERE l.db = q.db AND l.key = q.key
                     ORDER BY l.pos DESC LIMIT 1) AS hi
                FROM unnest(p_db, p_key) WITH ORDINALITY AS q(db, key, n)
                LEFT JOIN helios_kv.keys k ON k.db = q.db AND k.key = q.key
            ), made AS (
                INSERT INTO helios_kv.keys (db, key, type)
                SELECT s.db, s.key, 'list' FROM s WHERE s.type IS NULL
            ), touched AS (
                UPDATE helios_kv.keys k SET version = nextval('helios_kv.versions')
                FROM s WHERE s.type = 'list' AND k.db = s.db AND k.key = s.key
            ), items AS (
                SELECT i.slot, i.left_, i.value, row_number() OVER (
                    PARTITION BY i.slot, i.left_ ORDER BY i.n) AS rn
                FROM unnest(i_slot, i_left, i_value) WITH ORDINALITY AS i(slot, left_, value, n)
            ), put AS (
                INSERT INTO helios_kv.lists (db, key, pos, value)
                SELECT s.db, s.key, CASE WHEN items.left_ THEN coalesce(s.lo, 0) - items.rn
                    ELSE coalesce(s.hi, -1) + items.rn END, items.value
                FROM items JOIN s ON s.slot = items.slot
                WHERE s.type IS NULL OR s.type = 'list'
            )
            SELECT s.slot, coalesce(s.type, 'new'), s.lo, s.hi FROM s;
            IF p_notify IS NOT NULL THEN
                PERFORM pg_notify('helios_kv', p_notify);
            END IF;
        END
        $f$;
        CREATE FUNCTION helios_kv.add_group(
            p_db smallint[], p_key bytea[], p_type text[], e_slot integer[],
            e_element bytea[], e_value bytea[], e_score double precision[], p_now bigint,
            p_notify text
        ) RETURNS TABLE (slot integer, state text, added bytea[])
        LANGUAGE plpgsql AS $f$
        #variable_conflict use_column
        BEGIN
            PERFORM 1 FROM helios_kv.keys k JOIN unnest(p_db, p_key) AS q(db, key)
                ON k.db = q.db AND k.key = q.key ORDER BY k.db, k.key FOR UPDATE OF k;
            DELETE FROM helios_kv.keys k USING unnest(p_db, p_key) AS q(db, key)
                WHERE k.db = q.db AND k.key = q.key AND k.expires_at_ms <= p_now;
            RETURN QUERY
            WITH s AS (
                SELECT q.n::integer AS slot, q.db, q.key, q.want, k.type
                FROM unnest(p_db, p_key, p_type) WITH ORDINALITY AS q(db, key, want, n)
                LEFT JOIN helios_kv.keys k ON k.db = q.db AND k.key = q.key
            ), made AS (
                INSERT INTO helios_kv.keys (db, key, type)
                SELECT s.db, s.key, s.want FROM s WHERE s.type IS NULL
            ), touched AS (
                UPDATE helios_kv.keys k SET version = nextval('helios_kv.versions')
                FROM s WHERE s.type = s.want AND k.db = s.db AND k.key = s.key
            ), e AS (
                SELECT s.db, s.key, s.want, u.element, u.value, u.score
                FROM unnest(e_slot, e_element, e_value, e_score) AS u(slot, element, value, score)
                JOIN s ON s.slot = u.slot WHERE s.type IS NULL OR s.type = s.want
            ), h AS (
                INSERT INTO helios_kv.hashes AS t (db, key, field, value)
                SELECT e.db, e.key, e.element, e.value FROM e WHERE e.want = 'hash'
                ON CONFLICT (db, key, field) DO UPDATE SET value = EXCLUDED.value
                RETURNING t.db, t.key, t.field AS element, t.xmax = 0 AS fresh
            ), m AS (
                INSERT INTO helios_kv.sets AS t (db, key, member)
                SELECT e.db, e.key, e.element FROM e WHERE e.want = 'set'
                ON CONFLICT DO NOTHING
                RETURNING t.db, t.key, t.member AS element, true AS fresh
            ), z AS (
                INSERT INTO helios_kv.zsets AS t (db, key, member, score)
                SELECT e.db, e.key, e.element, e.score FROM e WHERE e.want = 'zset'
                ON CONFLICT (db, key, member) DO UPDATE SET score = EXCLUDED.score
                RETURNING t.db, t.key, t.member AS element, t.xmax = 0 AS fresh
            ), news AS (
                SELECT * FROM h UNION ALL SELECT * FROM m UNION ALL SELECT * FROM z
            )
            SELECT s.slot, coalesce(s.type, 'new'), ARRAY(
                SELECT news.element FROM news
                WHERE news.db = s.db AND news.key = s.key AND news.fresh)
            FROM s;
            IF p_notify IS NOT NULL THEN
                PERFORM pg_notify('helios_kv', p_notify);
            END IF;
        END
        $f$;
        """,
    ),
    (
        13,
        "PostgreSQL gateway: client counts of a node's processes (workers > 1)",
        """
        -- services/pgclients.py: each process of a node records its clients per principal;
        -- admitting one locks the node's row first, so limits hold across processes.
        CREATE TABLE helios.pg_gateway_nodes (
            node text PRIMARY KEY
        );
        CREATE TABLE helios.pg_gateway_clients (
            node text NOT NULL,
            pid integer NOT NULL,
            principal text NOT NULL,
            clients integer NOT NULL,
            PRIMARY KEY (node, pid, principal)
        );
        """,
    ),
    (
        14,
        "gRPC: open transactions per principal, counted across processes and nodes",
        """
        -- services/transactions.py: one row per transaction BeginTransaction opened, by the
        -- engine backend holding it; it counts while pg_stat_activity shows that backend
        -- (pid, backend_start) still in that transaction (xact_start).
        CREATE TABLE helios.open_transactions (
            principal text NOT NULL,
            pid integer NOT NULL,
            backend_start timestamptz NOT NULL,
            xact_start timestamptz NOT NULL,
            PRIMARY KEY (principal, pid, backend_start, xact_start)
        );
        """,
    ),
    (
        15,
        "key-value: items follow their key row through triggers instead of foreign keys",
        """
        -- A foreign key checks every inserted item against its key row (a query and a row
        -- lock per item: most of an LPUSH group's engine time) and cascades a deleted key
        -- to all four item tables. HeliosDB writes a key row before its items in the same
        -- transaction, with the row locked; these triggers keep the cascades, for the key's
        -- own type only (services/keyvalue/schema.py).
        ALTER TABLE helios_kv.hashes DROP CONSTRAINT hashes_db_key_fkey;
        ALTER TABLE helios_kv.lists DROP CONSTRAINT lists_db_key_fkey;
        ALTER TABLE helios_kv.sets DROP CONSTRAINT sets_db_key_fkey;
        ALTER TABLE helios_kv.zsets DROP CONSTRAINT zsets_db_key_fkey;
        CREATE FUNCTION helios_kv.drop_items() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN
            CASE OLD.type
            WHEN 'hash' THEN
                DELETE FROM helios_kv.hashes WHERE db = OLD.db AND key = OLD.key;
            WHEN 'list' THEN
                DELETE FROM helios_kv.lists WHERE db = OLD.db AND key = OLD.key;
            WHEN 'set' THEN
                DELETE FROM helios_kv.sets WHERE db = OLD.db AND key = OLD.key;
            WHEN 'zset' THEN
                DELETE FROM helios_kv.zsets WHERE db = OLD.db AND key = OLD.key;
            ELSE
            END CASE;
            RETURN NULL;
        END
        $f$;
        -- RENAME and SWAPDB only: one dynamic statement (planned per key) does.
        CREATE FUNCTION helios_kv.move_items() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN
            EXECUTE format(
                'UPDATE helios_kv.%I SET db = $1, key = $2 WHERE db = $3 AND key = $4',
                CASE OLD.type WHEN 'hash' THEN 'hashes' WHEN 'list' THEN 'lists'
                    WHEN 'set' THEN 'sets' ELSE 'zsets' END
            ) USING NEW.db, NEW.key, OLD.db, OLD.key;
            RETURN NULL;
        END
        $f$;
        CREATE TRIGGER items_follow_delete AFTER DELETE ON helios_kv.keys
            FOR EACH ROW WHEN (OLD.type <> 'string') EXECUTE FUNCTION helios_kv.drop_items();
        CREATE TRIGGER items_follow_rename AFTER UPDATE OF db, key ON helios_kv.keys
            FOR EACH ROW WHEN (OLD.type <> 'string' AND (OLD.db, OLD.key) <> (NEW.db, NEW.key))
            EXECUTE FUNCTION helios_kv.move_items();
        """,
    ),
    (
        16,
        "key-value: add_hash_group / add_set_group / add_zset_group for one-type groups",
        "".join(_KV_ADD_ONE_TYPE.format(**kind) for kind in _KV_ADD_TYPES),
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
