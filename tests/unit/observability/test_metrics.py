"""observability/metrics.py: the fast request recorder writes what prometheus_client's own
Counter.inc / Histogram.observe / Gauge.inc would."""

from __future__ import annotations

from prometheus_client import generate_latest

from heliosdb.observability.metrics import (
    LATENCY,
    OPEN_CONNECTIONS,
    REGISTRY,
    REQUESTS,
    RequestRecorder,
    open_gauge,
)


def _samples(interface: str) -> dict[str, float]:
    text = generate_latest(REGISTRY).decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if f'interface="{interface}"' in line and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_recorder_matches_prometheus_client() -> None:
    fast, slow = RequestRecorder("unit-fast"), ("unit-slow",)
    for route, status, seconds in [
        ("/a", 200, 0.0001),
        ("/a", 200, 0.0005),  # on a bucket's bound: that bucket (le is inclusive)
        ("/a", 404, 0.003),
        ("/b", 200, 2.5),
        ("/b", 200, 31.0),  # past the last finite bound: +Inf only
    ]:
        fast.record(route, status, seconds)
        REQUESTS.labels(slow[0], route, str(status)).inc()
        LATENCY.labels(slow[0], route).observe(seconds)
    got = {k.replace("unit-fast", "X"): v for k, v in _samples("unit-fast").items()}
    want = {k.replace("unit-slow", "X"): v for k, v in _samples("unit-slow").items()}
    assert got == want
    assert got['heliosdb_requests_total{interface="X",route="/a",status="200"}'] == 2.0


def test_open_gauge_counts_up_and_down() -> None:
    gauge = open_gauge("unit-open")
    gauge.inc()
    gauge.inc()
    gauge.dec()
    assert OPEN_CONNECTIONS.labels("unit-open")._value.get() == 1.0
    gauge.dec()
    assert OPEN_CONNECTIONS.labels("unit-open")._value.get() == 0.0
