"""ioredis (Node.js) drives a session: a second client ecosystem."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("ioredis_session.js")


@pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "ioredis").is_dir(),
    reason="node or ioredis is not installed (scripts/test-deps runs npm install)",
)
def test_ioredis_session(redis_port: int, rw_key: str) -> None:
    result = subprocess.run(
        ["node", str(SCRIPT), str(redis_port), rw_key, f"io{uuid.uuid4().hex[:8]}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip() == "ok"
