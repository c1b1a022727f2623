"""An acknowledged write survives kill -9 of the node (durability: always)."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.nodeproc import NodeProcess


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "data",
        extra_args=["--environment", "test"],
        env={"HELIOSDB_REDIS__DURABILITY": "always"},
    ).start()
    try:
        assert node.admin_key is not None
        client = redis.Redis(port=node.ports["redis"], password=node.admin_key)
        with client.pipeline(transaction=False) as pipe:
            for i in range(200):
                pipe.set(f"d:{i}", i)
            pipe.execute()
        client.rpush("d:list", "a", "b")
        client.hset("d:hash", "f", "v")
        client.set("d:last", "acknowledged")
        client.close()
        node.kill()
        node.start()
        client = redis.Redis(port=node.ports["redis"], password=node.admin_key)
        assert client.mget([f"d:{i}" for i in range(200)]) == [str(i).encode() for i in range(200)]
        assert client.lrange("d:list", 0, -1) == [b"a", b"b"]
        assert client.hgetall("d:hash") == {b"f": b"v"}
        assert client.get("d:last") == b"acknowledged"
        client.close()
    finally:
        node.stop()
