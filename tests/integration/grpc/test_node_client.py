"""The proto from another ecosystem: Node.js with @grpc/grpc-js and @grpc/proto-loader."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.nodeproc import NodeProcess

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("node_client.mjs")


@pytest.fixture(scope="module")
def node_bin() -> str:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("Node.js and the npm packages are needed: run scripts/test-deps")
    return node


def test_node_client_query_and_vector_search(node: NodeProcess, rw_key: str, node_bin: str) -> None:
    index = f"node_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {rw_key}"}
    created = httpx.post(
        f"{node.api}/vectors/indexes", json={"name": index, "dimension": 3}, headers=headers
    )
    assert created.status_code == 201, created.text
    upserted = httpx.post(
        f"{node.api}/vectors/upsert",
        json={
            "index_name": index,
            "vectors": [
                {"id": "r1", "vector": [1, 0.1, 0], "metadata": {"colour": "red"}},
                {"id": "b1", "vector": [1, 0, 0], "metadata": {"colour": "blue"}},
                {"id": "r2", "vector": [0, 1, 0], "metadata": {"colour": "red"}},
            ],
        },
        headers=headers,
    )
    assert upserted.status_code == 200, upserted.text
    completed = subprocess.run(
        [node_bin, str(SCRIPT), f"127.0.0.1:{node.ports['grpc']}", rw_key, index],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    answer = orjson.loads(completed.stdout)
    assert [c["name"] for c in answer["query"]["columns"]] == ["answer", "greeting"]
    row = answer["query"]["rows"][0]["values"]
    assert row[0]["int_value"] == "42"  # int64 as a string in JavaScript
    assert row[1]["string_value"] == "hello from node"
    results = answer["search"]["results"]
    assert [r["id"] for r in results] == ["r1", "r2"]
    colour = results[0]["metadata"]["fields"]["colour"]
    assert "red" in (colour.get("string_value"), colour.get("stringValue"))
    assert answer["search"]["metrics"]["search_path"] in ("hnsw_iterative", "exact")
    assert answer["error"] == {"code": 5, "heliosdb_code": "NOT_FOUND"}
