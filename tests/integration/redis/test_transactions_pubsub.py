"""MULTI/EXEC/WATCH, blocking pops, pub/sub, auth and connection commands."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.integration.postgres.conftest import create_user
from tests.integration.redis.conftest import connect
from tests.nodeproc import NodeProcess

K = Callable[[str], str]


def test_pipeline_replies_in_order(r: redis.Redis, k: K) -> None:
    with r.pipeline(transaction=False) as pipe:
        for i in range(100):
            pipe.set(k(f"p{i}"), i)
            pipe.get(k(f"p{i}"))
            pipe.incr(k("count"))
        results = pipe.execute()
    assert results[1::3] == [str(i).encode() for i in range(100)]
    assert results[2::3] == list(range(1, 101))


def test_multi_exec_atomic_and_errors(r: redis.Redis, k: K) -> None:
    with r.pipeline() as pipe:
        pipe.set(k("a"), 1)
        pipe.incr(k("a"))
        pipe.lpush(k("a"), "x")
        pipe.get(k("a"))
        results = pipe.execute(raise_on_error=False)
    assert results[:2] == [True, 2]
    assert isinstance(results[2], redis.ResponseError)
    assert results[3] == b"2"
    with pytest.raises(redis.ResponseError), r.pipeline() as pipe:
        pipe.set(k("b"), 1)
        pipe.execute_command("NOSUCHCOMMAND")
        pipe.execute()
    assert r.get(k("b")) is None
    with pytest.raises(redis.ResponseError, match=r"^EXEC without MULTI$"):
        r.execute_command("EXEC")


def test_watch_conflict_from_second_client(r: redis.Redis, r2: redis.Redis, k: K) -> None:
    key = k("w")
    r.set(key, 1)
    with r.pipeline() as pipe:
        pipe.watch(key)
        r2.set(key, 100)  # another client changes the watched key
        pipe.multi()
        pipe.incr(key)
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert r.get(key) == b"100"

    def bump(pipe: Any) -> None:
        value = int(pipe.get(key))
        pipe.multi()
        pipe.set(key, value + 1)

    r.transaction(bump, key)
    assert r.get(key) == b"101"


def test_watch_expired_key_aborts(r: redis.Redis, k: K) -> None:
    key = k("w")
    r.set(key, 1, px=100)
    with r.pipeline() as pipe:
        pipe.watch(key)
        time.sleep(0.25)
        pipe.multi()
        pipe.set(key, 2)
        with pytest.raises(redis.WatchError):
            pipe.execute()


def test_blocking_pop_woken_by_other_client(r: redis.Redis, r2: redis.Redis, k: K) -> None:
    results: list[Any] = []
    waiter = threading.Thread(target=lambda: results.append(r.blpop([k("q")], timeout=20)))
    waiter.start()
    time.sleep(0.3)
    r2.rpush(k("q"), "job")
    waiter.join(25)
    assert results == [(k("q").encode(), b"job")] or results == [[k("q").encode(), b"job"]]
    assert r.blpop([k("empty")], timeout=0.1) is None
    r2.zadd(k("z"), {"m": 1})
    assert r.bzpopmin([k("z")], timeout=1) is not None


def test_pubsub_resp2_and_patterns(r2: redis.Redis, r: redis.Redis, k: K) -> None:
    pubsub = r2.pubsub()
    pubsub.subscribe(k("ch"))
    pubsub.psubscribe(k("p*"))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    assert r.publish(k("ch"), "hello") == 1
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["data"] == b"hello"
    assert r.publish(k("px"), "pat") == 1
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["type"] == "pmessage"
    assert message["channel"] == k("px").encode() and message["data"] == b"pat"
    assert k("ch").encode() in r.pubsub_channels(k("*"))
    assert r.pubsub_numsub(k("ch")) == [(k("ch").encode(), 1)]
    with pytest.raises(redis.ResponseError, match=r"only \(P\|S\)SUBSCRIBE"):
        pubsub.execute_command("GET", "x")
        pubsub.parse_response(timeout=5)
    pubsub.close()


def test_pubsub_resp3_push(r3: redis.Redis, r: redis.Redis, k: K) -> None:
    pubsub = r3.pubsub()
    pubsub.subscribe(k("ch"))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    r.publish(k("ch"), "pushed")
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["data"] == b"pushed"
    pubsub.close()


def test_auth_required_and_errors(redis_port: int, rw_key: str) -> None:
    anonymous = connect(redis_port, None)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("x")
    anonymous.close()
    wrong = connect(redis_port, "hdb_sk_notakey")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()
    for protocol in (2, 3):
        ok = connect(redis_port, rw_key, protocol, username="anyone")
        assert ok.ping() is True
        ok.close()


def test_read_only_key_gets_noperm_on_writes(
    redis_port: int, ro_key: str, r: redis.Redis, k: K
) -> None:
    r.set(k("ro"), "visible")
    ro = connect(redis_port, ro_key)
    try:
        assert ro.get(k("ro")) == b"visible"
        assert ro.exists(k("ro")) == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            ro.set(k("ro"), "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            ro.lpush(k("l"), "x")
    finally:
        ro.close()


def test_connection_commands(r: redis.Redis) -> None:
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.client_setname("tester") is True
    assert r.client_getname() in ("tester", b"tester")
    assert isinstance(r.client_id(), int)
    assert "tester" in str(r.client_list())
    info = r.info()
    assert info["redis_version"] == "7.4.0" and info["role"] == "master"
    assert r.info("keyspace") is not None
    assert r.config_get("databases") in ({"databases": "16"}, {b"databases": b"16"})
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r.config_set("nosuchoption", "1")
    assert len(r.time()) == 2
    assert r.command_count() > 100
    with pytest.raises(redis.ResponseError, match=r"^Client names cannot contain spaces"):
        r.client_setname("a b")


def test_auth_with_heliosdb_user(node: NodeProcess, redis_port: int, k: K) -> None:
    name = create_user(node, "correct horse battery")
    client = connect(redis_port, "correct horse battery", username=name)
    try:
        assert client.set(k("u"), "1") is True
    finally:
        client.close()
    wrong = connect(redis_port, "wrong password", username=name)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()
    reader = create_user(node, "read only password", read_only=True)
    ro = connect(redis_port, "read only password", username=reader)
    try:
        assert ro.get(k("u")) == b"1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            ro.set(k("u"), "2")
    finally:
        ro.close()


def test_redis_py_lock_runs_without_lua(r: redis.Redis, r2: redis.Redis, k: K) -> None:
    lock = r.lock(k("lock"), timeout=10, blocking_timeout=0.2)
    assert lock.acquire() is True
    assert r2.lock(k("lock"), blocking_timeout=0.2).acquire() is False
    assert lock.extend(5) is True
    assert 10_000 < r.pttl(k("lock")) <= 15_000
    assert lock.reacquire() is True
    lock.release()
    assert r.exists(k("lock")) == 0
    with pytest.raises(redis.exceptions.LockError):
        lock.release()
    stolen = r.lock(k("lock2"), timeout=10)
    assert stolen.acquire() is True
    r2.set(k("lock2"), "someone else")
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        stolen.release()
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha("0" * 40, 0)
    assert r.script_exists("0" * 40) == [False]
