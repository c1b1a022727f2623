"""The Redis interface: RESP2/RESP3 on port 6379 over the key-value service.

codec.py (sans-IO RESP), connection.py (per-client state machine), registry.py (command
table), commands/ (one module per family), errors.py (Redis's exact error texts),
listener.py (the TCP listener node.py starts).
"""
