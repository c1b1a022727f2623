"""mongosh and the Node.js driver (npm packages from package.json) against the node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mongodb.conftest import mongo_uri

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = Path(__file__).parent / "scripts"
MONGOSH = ROOT / "node_modules" / ".bin" / "mongosh"
NODE_DRIVER = ROOT / "node_modules" / "mongodb"


def _run(command: list[str], env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    done = subprocess.run(
        command,
        env={**os.environ, "HOME": str(tmp_path), "DO_NOT_TRACK": "1", **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


def mongosh_script(
    port: int, key: str, tmp_path: Path, script: str, **uri_options: str
) -> dict[str, Any]:
    """What ``scripts/<script>`` prints last (a JSON line), run by mongosh in a scratch
    database of its own (HELIOS_TEST_DB)."""
    name = f"sh_{uuid.uuid4().hex[:8]}"
    uri = mongo_uri(port, key, **uri_options).replace("/?", f"/{name}?")
    command = [str(MONGOSH), uri, "--quiet", "--norc", "--file", str(SCRIPTS / script)]
    result = _run(command, {"HELIOS_TEST_DB": name}, tmp_path)
    result["_db"] = name
    return result


@pytest.mark.skipif(not MONGOSH.exists(), reason="mongosh is installed by scripts/test-deps")
def test_mongosh_script(mongo_port: int, rw_key: str, tmp_path: Path) -> None:
    out = mongosh_script(mongo_port, rw_key, tmp_path, "mongosh_session.js")
    name = out["_db"]
    assert out["version"].startswith("7.0")
    assert name in out["dbs"]
    assert sorted(out["collections"]) == ["items", "many"]
    assert out["found"] == [{"sku": "a"}, {"sku": "c"}]
    assert out["iterated"] == 150
    assert out["updated"] == 1
    assert out["afterUpdate"] == {"qty": 12, "tags": ["y", "z"]}
    assert out["big"] == "9007199254740993"
    assert out["decimal"] == "1.50"
    assert out["agg"] == [{"_id": "x", "n": 1}, {"_id": "y", "n": 2}, {"_id": "z", "n": 1}]
    assert out["index"] == "sku_1_qty_-1"
    assert out["indexes"] == ["_id_", "sku_1_qty_-1"]
    assert out["count"] == 2
    assert out["stats"] == 3
    assert out["deleted"] == 1
    assert (out["txnInside"], out["txnOutside"]) == (2, 0)
    assert (out["txnCommitted"], out["txnAborted"]) == (2, 2)
    assert out["dropped"] == 1


@pytest.mark.skipif(
    shutil.which("node") is None or not NODE_DRIVER.exists(),
    reason="the mongodb npm package is installed by scripts/test-deps",
)
def test_node_driver(mongo_port: int, rw_key: str, tmp_path: Path) -> None:
    name = f"nd_{uuid.uuid4().hex[:8]}"
    out = _run(
        ["node", str(SCRIPTS / "node_driver.mjs")],
        {"HELIOS_MONGO_URI": mongo_uri(mongo_port, rw_key), "HELIOS_TEST_DB": name},
        tmp_path,
    )
    assert out["find"] == [{"_id": 3}, {"_id": 1}]
    assert out["group"] == [{"_id": "apple", "total": 12}, {"_id": "pear", "total": 2}]
    assert out["upsert"] == 9
    assert out["duplicate"] == {"code": 11000, "keyValue": {"_id": 1}}
    assert out["count"] == 4 and out["estimated"] == 4
    assert sorted(out["distinct"]) == ["apple", "fig", "pear"]
    assert out["transaction"] == {"inside": 5, "outside": 4, "after": 5, "aborted": 5}
