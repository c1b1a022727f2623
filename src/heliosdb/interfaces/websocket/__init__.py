"""The WebSocket API: ``ws://host:8081/ws``, subprotocol ``heliosdb.v1``.

codec.py        JSON envelopes <-> Request / outgoing messages (sans-IO)
connection.py   one client's state: principal, subscriptions, bounded outbox
registry.py     the action table: authenticate, subscribe, unsubscribe, query, ping
commands/       one module per action family
errors.py       HeliosError -> the error object in responses
server.py       the listener (the ``websockets`` library's asyncio server)
"""
