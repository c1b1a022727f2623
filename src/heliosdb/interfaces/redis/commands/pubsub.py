"""Pub/sub: (P)SUBSCRIBE, (P)UNSUBSCRIBE, PUBLISH, PUBSUB; messages cross nodes via the engine."""

from __future__ import annotations

import logging
from typing import Any

from heliosdb.interfaces.redis.codec import NO_REPLY
from heliosdb.interfaces.redis.commands.args import word
from heliosdb.interfaces.redis.errors import unknown_subcommand
from heliosdb.interfaces.redis.registry import Call, command

log = logging.getLogger("heliosdb.interfaces.redis")


def _confirm(call: Call, kind: bytes, name: bytes | None) -> None:
    """Each (un)subscription is confirmed by its own push frame (an array under RESP2)."""
    call.client.push([kind, name, call.client.subscriptions])


@command("subscribe", -2, "pubsub noqueue")
async def subscribe(call: Call) -> Any:
    for channel in call.args[1:]:
        if channel not in call.client.channels:
            call.client.channels.add(channel)
            call.kv.subscribe(channel, call.client.deliver)
        _confirm(call, b"subscribe", channel)
    await _recorded(call)
    return NO_REPLY


async def _recorded(call: Call) -> None:
    """Confirmations go out once every node can count the new subscriber (PUBLISH)."""
    try:
        await call.kv.subscriptions_recorded()
    except Exception:
        log.warning("pub/sub subscription not recorded in the engine yet", exc_info=True)


@command("psubscribe", -2, "pubsub noqueue")
async def psubscribe(call: Call) -> Any:
    for pattern in call.args[1:]:
        if pattern not in call.client.patterns:
            call.client.patterns.add(pattern)
            call.kv.psubscribe(pattern, call.client.deliver)
        _confirm(call, b"psubscribe", pattern)
    await _recorded(call)
    return NO_REPLY


@command("unsubscribe", -1, "pubsub noqueue")
async def unsubscribe(call: Call) -> Any:
    channels = call.args[1:] or sorted(call.client.channels)
    if not channels:
        _confirm(call, b"unsubscribe", None)
    for channel in channels:
        if channel in call.client.channels:
            call.client.channels.discard(channel)
            call.kv.unsubscribe(channel, call.client.deliver)
        _confirm(call, b"unsubscribe", channel)
    return NO_REPLY


@command("punsubscribe", -1, "pubsub noqueue")
async def punsubscribe(call: Call) -> Any:
    patterns = call.args[1:] or sorted(call.client.patterns)
    if not patterns:
        _confirm(call, b"punsubscribe", None)
    for pattern in patterns:
        if pattern in call.client.patterns:
            call.client.patterns.discard(pattern)
            call.kv.punsubscribe(pattern, call.client.deliver)
        _confirm(call, b"punsubscribe", pattern)
    return NO_REPLY


@command("publish", 3, "pubsub fast")
async def publish(call: Call) -> Any:
    return await call.kv.publish(call.args[1], call.args[2])


@command("pubsub", -2, "pubsub")
async def pubsub(call: Call) -> Any:
    sub = word(call.args[1])
    if sub == b"CHANNELS" and len(call.args) <= 3:
        return await call.kv.channels(call.args[2] if len(call.args) == 3 else None)
    if sub == b"NUMSUB":
        channels = call.args[2:]
        counts = await call.kv.subscriber_counts(channels)
        return [x for pair in zip(channels, counts, strict=True) for x in pair]
    if sub == b"NUMPAT" and len(call.args) == 2:
        return await call.kv.pattern_count()
    if sub == b"SHARDCHANNELS":
        return []
    if sub == b"SHARDNUMSUB":
        return [x for c in call.args[2:] for x in (c, 0)]
    raise unknown_subcommand(call.args[1], "pubsub")
