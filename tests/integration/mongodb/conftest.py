"""Fixtures for the MongoDB listener: pymongo clients for keys on the session's node,
and a fresh database name per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pymongo
import pytest
from pymongo.database import Database

from tests.nodeproc import NodeProcess, serving_pids

T = TypeVar("T")


def found(value: T | None) -> T:
    """``value``, which the test expects to be there (a ``find_one``, an error's details)."""
    assert value is not None
    return value


def mongo_uri(port: int, password: str, user: str = "apikey", **options: str) -> str:
    from urllib.parse import quote

    query = "&".join(f"{k}={v}" for k, v in {"authSource": "admin", **options}.items())
    return f"mongodb://{quote(user)}:{quote(password)}@127.0.0.1:{port}/?{query}"


def connect(port: int, password: str, **options: Any) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(
        mongo_uri(port, password), serverSelectionTimeoutMS=10_000, tz_aware=True, **options
    )


def rss_bytes(node: NodeProcess, field: str = "VmRSS") -> int:
    """The resident memory of the process serving ``node``'s MongoDB port (``VmHWM``:
    the most it has had at once)."""
    (pid,) = set(serving_pids(node.ports["mongodb"]))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def admin_client(node: NodeProcess) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    """A client of ``node`` with its admin key, closed after; for a fixture to ``yield from``."""
    assert node.admin_key is not None
    c = connect(node.ports["mongodb"], node.admin_key)
    yield c
    c.close()


@pytest.fixture(scope="session")
def mongo_port(node: NodeProcess) -> int:
    return node.ports["mongodb"]


@pytest.fixture(scope="session")
def client(mongo_port: int, rw_key: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    c = connect(mongo_port, rw_key)
    yield c
    c.close()


@pytest.fixture(scope="session")
def ro_client(mongo_port: int, ro_key: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    c = connect(mongo_port, ro_key)
    yield c
    c.close()


@pytest.fixture(scope="module")
def db(client: pymongo.MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def coll_name() -> str:
    return f"c_{uuid.uuid4().hex[:8]}"
