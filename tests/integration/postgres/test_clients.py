"""Real, unmodified clients through the gateway: psql, pgbench, psycopg 3, asyncpg, SQLAlchemy."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.integration.postgres.conftest import engine_tool, libpq_conninfo


def _env(password: str) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "60"}


def _psql(psql: str, port: int, key: str, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [psql, libpq_conninfo(port), "-X", "-v", "ON_ERROR_STOP=1", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(key),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _name() -> str:
    return f"c_{uuid.uuid4().hex[:8]}"


# psql


def test_psql_describe_and_list(psql: str, pg_port: int, rw_key: str) -> None:
    table = _name()
    _psql(psql, pg_port, rw_key, "-c", f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    assert table in _psql(psql, pg_port, rw_key, "-c", r"\dt")
    described = _psql(psql, pg_port, rw_key, "-c", rf"\d {table}")
    assert "id" in described and "integer" in described and f"{table}_pkey" in described


def test_psql_copy_both_ways(psql: str, pg_port: int, rw_key: str, tmp_path: Path) -> None:
    table = _name()
    source = tmp_path / "in.csv"
    source.write_text("".join(f"{i},row {i}\n" for i in range(5000)))
    target = tmp_path / "out.csv"
    _psql(psql, pg_port, rw_key, "-c", f"CREATE TABLE {table} (id int, v text)")
    _psql(psql, pg_port, rw_key, "-c", rf"\copy {table} from '{source}' csv")
    _psql(
        psql, pg_port, rw_key, "-c", rf"\copy (SELECT * FROM {table} ORDER BY id) to '{target}' csv"
    )
    assert target.read_text() == source.read_text()


def test_psql_sigint_cancels_the_query(psql: str, pg_port: int, rw_key: str) -> None:
    process = subprocess.Popen(
        [psql, libpq_conninfo(pg_port), "-X", "-c", "SELECT pg_sleep(60)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(rw_key),
    )
    _wait_for_query("pg_sleep(60)", rw_key, pg_port)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert "canceling statement due to user request" in stderr


def _wait_for_query(text: str, key: str, port: int) -> None:
    dsn = f"postgresql://apikey:{key}@127.0.0.1:{port}/heliosdb"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(300):
            rows = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                "AND pid <> pg_backend_pid()",
                (f"%{text}%",),
            ).fetchall()
            if rows:
                return
            time.sleep(0.05)
    raise AssertionError(f"{text} never started")


# pgbench (the engine's own build, same major version as the engine)


def test_pgbench_init_and_run(pg_port: int, rw_key: str) -> None:
    pgbench = engine_tool("pgbench")
    conninfo = ["-h", "127.0.0.1", "-p", str(pg_port), "-U", "apikey", "heliosdb"]
    init = subprocess.run(
        [pgbench, "-i", "-s", "1", *conninfo], capture_output=True, text=True, env=_env(rw_key)
    )
    assert init.returncode == 0, init.stderr
    for mode in ("simple", "prepared"):
        run = subprocess.run(
            [pgbench, "-c", "4", "-t", "50", "-M", mode, *conninfo],
            capture_output=True,
            text=True,
            env=_env(rw_key),
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "number of failed transactions: 0" in run.stdout


# psycopg 3


def test_psycopg_sync_prepared_pipeline_and_cursors(rw_dsn: str) -> None:
    with psycopg.connect(rw_dsn) as conn:
        for i in range(10):  # crosses prepare_threshold: named statements
            assert conn.execute("SELECT %s::int * 2", (i,)).fetchone() == (i * 2,)
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int", (i,)) for i in range(20)]
        assert [c.fetchone() for c in cursors] == [(i,) for i in range(20)]
        with conn.cursor(name="big") as cursor:
            cursor.execute("SELECT generate_series(1, 10000)")
            assert len(cursor.fetchmany(100)) == 100
            assert len(cursor.fetchall()) == 9900
        conn.rollback()
        assert conn.info.parameter_status(
            "server_version",
        ).startswith("18")  # type: ignore[union-attr]


def test_psycopg_binary_copy_both_ways(rw_dsn: str) -> None:
    table = _name()
    rows = [(i, f"value {i}", i / 3) for i in range(20000)]
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int, v text, f float8)")
        cursor = conn.cursor()
        with cursor.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "float8"])
            for row in rows:
                copy.write_row(row)
        with cursor.copy(
            f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "text", "float8"])
            assert list(copy.rows()) == rows


def test_psycopg_listen_notify(rw_dsn: str) -> None:
    channel = _name()
    with psycopg.connect(rw_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")
        with psycopg.connect(rw_dsn, autocommit=True) as sender:
            sender.execute("SELECT pg_notify(%s, 'payload-1')", (channel,))
            sender_pid = sender.info.backend_pid
        notifies = list(listener.notifies(timeout=10, stop_after=1))
    assert [(n.channel, n.payload, n.pid) for n in notifies] == [(channel, "payload-1", sender_pid)]


def test_psycopg_backend_pid_is_the_engine_backend(rw_dsn: str) -> None:
    with psycopg.connect(rw_dsn) as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (conn.info.backend_pid,)


def test_psycopg_cancel_safe(rw_dsn: str) -> None:
    with psycopg.connect(rw_dsn) as conn:

        def cancel_later() -> None:
            time.sleep(0.5)
            conn.cancel_safe()

        import threading

        threading.Thread(target=cancel_later).start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")


async def test_psycopg_async(rw_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(rw_dsn) as conn:
        cursor = await conn.execute("SELECT %s::text || 'b'", ("a",))
        assert await cursor.fetchone() == ("ab",)
        async with conn.pipeline():
            cursors = [await conn.execute("SELECT %s::int", (i,)) for i in range(5)]
        assert [await c.fetchone() for c in cursors] == [(i,) for i in range(5)]


# asyncpg


async def test_asyncpg_prepared_copy_and_listener(rw_dsn: str) -> None:
    table = _name()
    conn = await asyncpg.connect(rw_dsn, server_settings={"jit": "off"})
    other = await asyncpg.connect(rw_dsn)
    try:
        statement = await conn.prepare("SELECT $1::int + $2::int")
        assert [await statement.fetchval(i, 1) for i in range(3)] == [1, 2, 3]
        await conn.execute(f"CREATE TABLE {table} (id int, v text)")
        await conn.copy_records_to_table(table, records=[(i, str(i)) for i in range(5000)])
        await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(-1, "a"), (-2, "b")])
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 5002
        received: asyncio.Queue[str] = asyncio.Queue()
        await conn.add_listener(table, lambda *args: received.put_nowait(args[3]))
        await other.execute(f"NOTIFY {table}, 'hi'")
        assert await asyncio.wait_for(received.get(), 10) == "hi"
    finally:
        await conn.close()
        await other.close()


async def test_asyncpg_timeout_cancels_on_the_engine(rw_dsn: str) -> None:
    conn = await asyncpg.connect(rw_dsn)
    try:
        with pytest.raises(TimeoutError):
            await conn.fetch("SELECT pg_sleep(30)", timeout=0.5)
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_asyncpg_pool(rw_dsn: str) -> None:
    pool = await asyncpg.create_pool(rw_dsn, min_size=2, max_size=4)
    try:
        results = await asyncio.gather(*(pool.fetchval("SELECT $1::int", i) for i in range(40)))
        assert results == list(range(40))
    finally:
        await pool.close()


# SQLAlchemy 2


class _Base(DeclarativeBase):
    pass


class Gadget(_Base):
    __tablename__ = f"gadget_{uuid.uuid4().hex[:6]}"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def test_sqlalchemy_orm_round_trip(rw_dsn: str) -> None:
    engine = sa.create_engine(
        rw_dsn.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
    )
    try:
        _Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([Gadget(name="sprocket"), Gadget(name="widget")])
            session.commit()
        with Session(engine) as session:
            names = session.scalars(sa.select(Gadget.name).order_by(Gadget.name)).all()
        assert names == ["sprocket", "widget"]
        assert Gadget.__tablename__ in sa.inspect(engine).get_table_names()
        _Base.metadata.drop_all(engine)
    finally:
        engine.dispose()


# Alembic (a migration through the gateway, with its version table)


def test_alembic_upgrade_and_downgrade(rw_dsn: str, tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    table = _name()
    version_table = f"alembic_{uuid.uuid4().hex[:8]}"
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(
        "from alembic import context\n"
        "import sqlalchemy as sa\n"
        "config = context.config\n"
        "engine = sa.create_engine(config.get_main_option('sqlalchemy.url'))\n"
        "with engine.connect() as connection:\n"
        "    context.configure(connection=connection,\n"
        "                      version_table=config.get_main_option('version_table'))\n"
        "    with context.begin_transaction():\n"
        "        context.run_migrations()\n"
        "engine.dispose()\n"
    )
    (scripts / "versions" / "0001_first.py").write_text(
        "import sqlalchemy as sa\n"
        "from alembic import op\n"
        "revision = '0001'\n"
        "down_revision = None\n"
        "def upgrade():\n"
        f"    op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True),\n"
        "                    sa.Column('name', sa.Text))\n"
        "def downgrade():\n"
        f"    op.drop_table('{table}')\n"
    )
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option(
        "sqlalchemy.url", rw_dsn.replace("postgresql://", "postgresql+psycopg://")
    )
    config.set_main_option("version_table", version_table)
    command.upgrade(config, "head")
    with psycopg.connect(rw_dsn) as conn:
        assert conn.execute(f"SELECT version_num FROM {version_table}").fetchone() == ("0001",)
        conn.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'x')")
        conn.commit()
    command.downgrade(config, "base")
    with psycopg.connect(rw_dsn) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
