"""The spec's client examples run against a local node: Python `websockets`, Node `ws`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.nodeproc import NodeProcess

EXAMPLES = Path(__file__).parent / "examples"
ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def orders(node: NodeProcess, admin_key: str) -> str:
    sql = "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text, qty int)"
    response = httpx.post(
        f"{node.api}/query", json={"sql": sql}, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert response.status_code == 200, response.text
    return "orders"


def _run_until(
    command: list[str], env: dict[str, str], ready: str, *, then: object, want: str
) -> str:
    """Start ``command``; when a line contains ``ready`` call ``then``; stop at ``want``."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    lines: list[str] = []
    timer = threading.Timer(60, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if ready in line:
                then()  # type: ignore[operator]
            if want in line:
                return line
        raise AssertionError("example ended without the expected output:\n" + "".join(lines))
    finally:
        timer.cancel()
        process.kill()
        process.wait()


def _insert(node: NodeProcess, key: str, item: str) -> None:
    response = httpx.post(
        f"{node.api}/query",
        json={"sql": "INSERT INTO orders (item, qty) VALUES ($1, 2)", "params": [item]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text


def test_python_example(node: NodeProcess, ws_url: str, rw_key: str, orders: str) -> None:
    env = {**os.environ, "HELIOSDB_WS_URL": ws_url, "HELIOSDB_API_KEY": rw_key}
    # The example prints nothing before its first event, so write until one shows up.
    stop = threading.Event()

    def keep_inserting() -> None:
        while not stop.wait(0.5):
            _insert(node, rw_key, "python-widget")

    writer = threading.Thread(target=keep_inserting, daemon=True)
    writer.start()
    try:
        line = _run_until(
            [sys.executable, str(EXAMPLES / "subscribe_orders.py")],
            env,
            "\x00never",
            then=None,
            want="Order event:",
        )
    finally:
        stop.set()
        writer.join()
    assert "'event_type': 'INSERT'" in line and "python-widget" in line


def test_javascript_example_with_node_ws(
    node: NodeProcess, ws_url: str, rw_key: str, orders: str
) -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "ws").exists():
        pytest.skip("node or the ws package is missing (scripts/test-deps installs them)")
    env = {**os.environ, "HELIOSDB_WS_URL": ws_url, "HELIOSDB_API_KEY": rw_key}
    line = _run_until(
        ["node", str(EXAMPLES / "subscribe_orders.js")],
        env,
        "subscribed: true",
        then=lambda: _insert(node, rw_key, "node-widget"),
        want="New order:",
    )
    row = json.loads(line.split("New order:", 1)[1])
    assert row["item"] == "node-widget" and row["qty"] == 2
