"""PostgreSQL wire protocol gateway (port 5432): HeliosDB authenticates, the engine answers.

    codec.py       startup-phase messages (sans-IO)
    auth.py        SCRAM-SHA-256 / cleartext exchanges against users and API keys
    connection.py  one client through startup: TLS, negotiation, limits, login
    relay.py       session pooling: client and engine sockets spliced, bytes untouched
    server.py      the listener, shared gateway state (cancel keys, limits), metrics
    errors.py      SQLSTATEs of the errors the gateway itself reports

There is no command registry: after startup the engine, not HeliosDB, answers every
message, so the gateway relays instead of dispatching.
"""
