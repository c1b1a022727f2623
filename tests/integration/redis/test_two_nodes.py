"""Two nodes over one engine: keys, pub/sub messages, WATCH and blocking pops cross nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.integration.redis.conftest import connect
from tests.nodeproc import NodeProcess

K = Callable[[str], str]


def test_two_nodes_share_keys_messages_watch_and_wakeups(
    r2: redis.Redis, second_node: NodeProcess, rw_key: str, k: K
) -> None:
    other = connect(second_node.ports["redis"], rw_key)
    try:
        r2.set(k("shared"), "from first")
        assert other.get(k("shared")) == b"from first"

        pubsub = other.pubsub()
        pubsub.subscribe(k("ch"))
        assert pubsub.get_message(timeout=10)["type"] == "subscribe"
        r2.publish(k("ch"), "across nodes")
        message = pubsub.get_message(timeout=10)
        assert message is not None and message["data"] == b"across nodes"
        pubsub.close()

        with r2.pipeline() as pipe:
            pipe.watch(k("w"))
            other.set(k("w"), "changed on the second node")
            pipe.multi()
            pipe.set(k("w"), "mine")
            with pytest.raises(redis.WatchError):
                pipe.execute()

        results: list[Any] = []
        waiter = threading.Thread(target=lambda: results.append(other.blpop([k("q")], timeout=20)))
        waiter.start()
        time.sleep(0.5)
        r2.rpush(k("q"), "job")
        waiter.join(25)
        assert results and results[0][1] == b"job"
    finally:
        other.close()


def test_large_messages_reach_other_nodes_in_order(
    r2: redis.Redis, second_node: NodeProcess, rw_key: str, k: K
) -> None:
    other = connect(second_node.ports["redis"], rw_key, 3)
    try:
        pubsub = other.pubsub()
        pubsub.subscribe(k("big"))
        assert pubsub.get_message(timeout=10)["type"] == "subscribe"
        large = bytes(range(256)) * 4096  # 1 MiB, every byte value: far past a NOTIFY payload
        r2.publish(k("big"), large)
        r2.publish(k("big"), "small after large")
        r2.publish(k("big"), b"x" * 20_000)
        received = []
        for _ in range(3):
            message = pubsub.get_message(timeout=10)
            assert message is not None and message["type"] == "message"
            received.append(message["data"])
        assert received == [large, b"small after large", b"x" * 20_000]
        pubsub.close()
    finally:
        other.close()


def test_publish_counts_receivers_on_every_node(
    r2: redis.Redis, second_node: NodeProcess, rw_key: str, k: K
) -> None:
    other = connect(second_node.ports["redis"], rw_key)
    try:
        pubsub = other.pubsub()
        pubsub.subscribe(k("counted"))
        pubsub.psubscribe(k("count*"))
        for _ in range(2):
            assert pubsub.get_message(timeout=10)["type"] in ("subscribe", "psubscribe")
        local = r2.pubsub()
        local.subscribe(k("counted"))
        assert local.get_message(timeout=10)["type"] == "subscribe"
        # Confirmed subscriptions on either node count at once: 2 channel, 1 pattern.
        assert r2.publish(k("counted"), "m") == 3
        assert other.publish(k("counted"), "m") == 3
        assert r2.pubsub_numsub(k("counted")) == [(k("counted").encode(), 2)]
        assert k("counted").encode() in r2.pubsub_channels(k("*"))
        assert r2.pubsub_numpat() >= 1
        assert r2.publish(k("counting"), "only the pattern") == 1
        pubsub.close()  # the second node's subscribers leave: recorded in the background
        deadline = time.monotonic() + 20
        while r2.publish(k("counted"), "m") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r2.publish(k("counted"), "m") == 1
        local.close()
    finally:
        other.close()
