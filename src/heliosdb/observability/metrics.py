"""Prometheus metrics of the node, one registry for every interface.

A node with REST worker processes (workers.py) runs prometheus_client in multiprocess
mode: counters, histograms and gauges live in files every process writes, and
:func:`exposition` adds them up, whichever process answers the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "heliosdb_requests_total",
    "Requests handled, by interface, route and status.",
    ["interface", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "heliosdb_request_duration_seconds",
    "Request latency, by interface and route.",
    ["interface", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
OPEN_CONNECTIONS = Gauge(
    "heliosdb_open_connections",
    "Client connections open now, by interface.",
    ["interface"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
AUTH_FAILURES = Counter(
    "heliosdb_auth_failures_total",
    "Failed authentications, by interface.",
    ["interface"],
    registry=REGISTRY,
)


class PoolCollector(Collector):
    """Engine pool figures read at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, dict[str, int]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "heliosdb_engine_pool_connections",
            "Engine pool connections, by pool and state.",
            labels=["pool", "state"],
        )
        for pool, figures in self._stats().items():
            family.add_metric([pool, "idle"], figures["idle"])
            family.add_metric([pool, "in_use"], figures["size"] - figures["idle"])
            family.add_metric([pool, "max"], figures["max"])
        yield family


def watch_pools(stats: Callable[[], dict[str, dict[str, int]]]) -> None:
    REGISTRY.register(PoolCollector(stats))


def exposition() -> bytes:
    """The /metrics text: this process's registry, or with worker processes every
    process's metric values added up plus this process's scrape-time figures."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        return generate_latest(REGISTRY)
    shared = CollectorRegistry()
    MultiProcessCollector(shared, path=directory)  # type: ignore[no-untyped-call]
    names = {family.name for family in shared.collect()}
    shared.register(_ScrapeTime(names))
    return generate_latest(shared)


class _ScrapeTime(Collector):
    """REGISTRY's families that no process file holds: figures read at scrape time (a
    file-backed metric with no samples yet in any process also passes, equally empty)."""

    def __init__(self, shared_names: set[str]) -> None:
        self.shared_names = shared_names

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name not in self.shared_names:
                yield family
