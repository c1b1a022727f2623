"""The default HNSW search beam follows top_k (services/vectors.py default_ef_search)."""

from __future__ import annotations

import pytest

from heliosdb.services.vectors import (
    DEFAULTS,
    EF_SEARCH_FLOOR,
    EF_SEARCH_PER_K,
    MAX_EF_SEARCH,
    MAX_TOP_K,
    default_ef_search,
)
from heliosdb.settings import Settings


@pytest.mark.parametrize(
    ("top_k", "beam"), [(1, 400), (10, 400), (50, 400), (51, 408), (100, 800), (125, 1000),
                        (500, 1000), (1000, 1000)],
)  # fmt: skip
def test_default_ef_search_follows_top_k(top_k: int, beam: int) -> None:
    assert default_ef_search(top_k) == beam


def test_default_ef_search_never_below_top_k_nor_above_pgvector_limit() -> None:
    for top_k in range(1, MAX_TOP_K + 1):
        beam = default_ef_search(top_k)
        assert top_k <= beam <= MAX_EF_SEARCH
    assert (EF_SEARCH_FLOOR, EF_SEARCH_PER_K, MAX_EF_SEARCH) == (400, 8, 1000)


def test_default_ef_construction() -> None:
    assert DEFAULTS == {"m": 16, "ef_construction": 128}


def test_default_pool_leaves_eight_connections_for_client_statements() -> None:
    # The Redis service keeps its listener and coalescing workers out of the read-write
    # pool; eight concurrent searches (the benchmarks' concurrency) must still each get a
    # connection, or one always waits in the node while raw pgvector runs all eight.
    settings = Settings()
    kept_by_redis = 1 + settings.redis.coalesce_workers
    assert settings.engine.pool_size - kept_by_redis >= 8
