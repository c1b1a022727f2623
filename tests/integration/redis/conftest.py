"""Redis clients (redis-py, RESP2 and RESP3) on the session node."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.nodeproc import NodeProcess


@pytest.fixture(scope="session")
def redis_port(node: NodeProcess) -> int:
    return node.ports["redis"]


def sql_rows(node: NodeProcess, key: str, sql: str, params: list[Any]) -> list[list[Any]]:
    """Rows of one SQL statement through the node's REST API (Redis data read as tables)."""
    response = httpx.post(
        f"{node.api}/query",
        headers={"Authorization": f"Bearer {key}"},
        json={"sql": sql, "params": params},
    )
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()["rows"]
    return rows


def connect(port: int, password: str | None, protocol: int = 2, **extra: object) -> redis.Redis:
    return redis.Redis(port=port, password=password, protocol=protocol, socket_timeout=30, **extra)  # type: ignore[arg-type]


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(request: pytest.FixtureRequest, redis_port: int, rw_key: str) -> Iterator[redis.Redis]:
    """A read-write client, once per protocol."""
    client = connect(redis_port, rw_key, request.param)
    yield client
    client.close()


@pytest.fixture
def r2(redis_port: int, rw_key: str) -> Iterator[redis.Redis]:
    client = connect(redis_port, rw_key, 2)
    yield client
    client.close()


@pytest.fixture
def r3(redis_port: int, rw_key: str) -> Iterator[redis.Redis]:
    client = connect(redis_port, rw_key, 3)
    yield client
    client.close()


@pytest.fixture
def k() -> Callable[[str], str]:
    """Key names unique to the test: k("a") -> "t<hex>:a"."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return lambda name: f"{prefix}:{name}"
