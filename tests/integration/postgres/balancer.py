"""A tiny TCP load balancer for tests, run as its own process:

    python balancer.py FIRST_PORT REST_PORT     (prints the port it listens on)

The first connection goes to FIRST_PORT, every later one to REST_PORT: a session on
one node, its client's cancel connection on another. A separate process, because
libpq's blocking cancel may hold the test's interpreter lock while it waits.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def main() -> None:
    first, rest = int(sys.argv[1]), int(sys.argv[2])
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    target = first
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target))
        target = rest
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


if __name__ == "__main__":
    main()
