"""The MongoDB wire protocol (port 27017) over the documents service.

codec.py       bytes <-> messages (OP_MSG, OP_QUERY, OP_COMPRESSED), sans-IO
connection.py  one client's loop and per-connection session; dispatch
registry.py    the command table (auth needed? writes?)
commands/      one module per command family
cursors.py     node-wide cursors for getMore/killCursors
errors.py      HeliosError -> {ok: 0, code, codeName, errmsg}
server.py      the listener on the shared TCP plumbing
"""
