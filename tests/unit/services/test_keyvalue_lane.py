"""The coalescer's pipelined connections start with its pooled connections' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from heliosdb.engine.datadir import DataDir
from heliosdb.engine.pools import Engine
from heliosdb.services.keyvalue.lane import Lane, session_settings
from heliosdb.settings import EngineSettings


def test_everysec_commits_without_waiting_for_the_flush_always_waits() -> None:
    assert session_settings(False) == {
        "plan_cache_mode": "force_generic_plan",
        "enable_seqscan": "off",
        "synchronous_commit": "off",
    }
    assert "synchronous_commit" not in session_settings(True)  # the engine's own: on


@pytest.mark.parametrize("synchronous_commit", [False, True])
def test_the_lane_logs_in_with_the_coalescer_settings(
    tmp_path: Path, synchronous_commit: bool
) -> None:
    engine = Engine(EngineSettings(), DataDir(tmp_path))
    parameters = Lane(engine, synchronous_commit).pipelines.parameters
    assert parameters.items() >= session_settings(synchronous_commit).items()
    assert parameters.items() >= engine.session_settings().items() - {
        ("application_name", "heliosdb")
    }
    assert parameters["application_name"] == "heliosdb-kv"
    assert ("synchronous_commit" in parameters) is not synchronous_commit
