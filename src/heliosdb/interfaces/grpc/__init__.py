"""The gRPC API (``heliosdb.v1.HeliosDB``), port 50051 by default.

    server.py     the listener: HeliosDB, grpc.health.v1 and server reflection, TLS
    front.py      the port's own HTTP/2 server: HeliosDB calls, the rest relayed to grpc.aio
    connection.py one HTTP/2 connection: frames, settings, flow-control windows
    http2.py      HTTP/2 frames and HPACK header blocks (the codec, sans-IO)
    servicer.py   one method per RPC: authenticate, call one service, render
    auth.py       ``authorization: Bearer <key>`` metadata -> Principal
    values.py     protobuf Value <-> Python values (the codec)
    errors.py     the one table from HeliosError codes to gRPC status codes

Every call goes through the same pipeline, built in servicer.py: error funnel ->
authentication -> handler -> service.
"""

import os

# The node forks (the embedded engine's tools) while gRPC threads run; gRPC's fork
# handlers are for clients that fork and only log noise here.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
