"""Prometheus metrics of the node, one registry for every interface.

A node with REST worker processes (workers.py) runs prometheus_client in multiprocess
mode: counters, histograms and gauges live in files every process writes, and
:func:`exposition` adds them up, whichever process answers the scrape.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.values import MutexValue

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
REFUSED_CONNECTIONS = Counter(
    "heliosdb_refused_connections_total",
    "Client connections refused because the listener held its maximum, by interface.",
    ["interface"],
    registry=REGISTRY,
)
OPEN_REQUESTS = Gauge(
    "heliosdb_requests_in_progress",
    "Requests being answered now, by interface.",
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


class OpenGauge:
    """``inc()``/``dec()`` of one labelled gauge child, straight on its value object (what
    Gauge.inc/dec come to, without their mode and observability checks per call)."""

    __slots__ = ("dec", "inc")

    def __init__(self, child: Any) -> None:
        self.inc: Callable[[], None] = partial(child._value.inc, 1)
        self.dec: Callable[[], None] = partial(child._value.inc, -1)


def open_gauge(interface: str) -> OpenGauge:
    """``interface``'s open client connections."""
    return OpenGauge(OPEN_CONNECTIONS.labels(interface))


def requests_gauge(interface: str) -> OpenGauge:
    """``interface``'s requests in progress."""
    return OpenGauge(OPEN_REQUESTS.labels(interface))


class RequestRecorder:
    """Counts one finished request of ``interface`` and observes its latency in as few
    calls as prometheus_client allows: the labelled children are looked up once per
    (route, status), and each update goes to their value objects directly (what
    Counter.inc and Histogram.observe come to, minus argument checks and the bucket loop;
    a bisect finds the bucket). The values are the metrics' own (locked, or file-backed
    with worker processes), so /metrics reads the same."""

    __slots__ = ("_children", "_interface")

    MAX_CHILDREN = 10_000  # routes are templates, but stay bounded all the same

    def __init__(self, interface: str) -> None:
        self._interface = interface
        self._children: dict[tuple[str, object], tuple[Any, Any, list[Any], bool]] = {}

    def record(self, route: str, status: object, seconds: float) -> None:
        hit = self._children.get((route, status))
        if hit is None:
            hit = self._child(route, status)
        count, total, buckets, in_process = hit
        bucket = buckets[bisect_left(_BOUNDS, seconds)]
        if in_process:
            # MutexValue.inc, inlined: three Python calls less per request
            with count._lock:
                count._value += 1
            with total._lock:
                total._value += seconds
            with bucket._lock:
                bucket._value += 1
        else:  # file-backed values (worker processes) write through their own inc()
            count.inc(1)
            total.inc(seconds)
            bucket.inc(1)

    def _child(self, route: str, status: object) -> tuple[Any, Any, list[Any], bool]:
        latency = LATENCY.labels(self._interface, route)
        values = (
            REQUESTS.labels(self._interface, route, str(status))._value,
            latency._sum,
            list(latency._buckets),
        )
        in_process = all(type(v) is MutexValue for v in (values[0], values[1], *values[2]))
        hit = (*values, in_process)
        if len(self._children) < self.MAX_CHILDREN:
            self._children[(route, status)] = hit
        return hit


_BOUNDS: tuple[float, ...] = tuple(LATENCY._upper_bounds)  # every child's, +Inf last


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
