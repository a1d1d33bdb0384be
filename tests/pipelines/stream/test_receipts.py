"""Count receipts reach the driver only from the run's own functions: a connection without the
run's token is refused, and a line that is not a JSON object is dropped, not a crash."""
from __future__ import annotations

import socket

from pipelines.stream.receipts import ReceiptSender, ReceiptServer


def _connect(address: str) -> socket.socket:
    host, _, port = address.partition("#")[0].rpartition(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_only_the_runs_functions_are_counted():
    server = ReceiptServer()
    try:
        assert server.address.startswith("127.0.0.1:") and len(server.token) == 32
        forger = _connect(server.address)
        forger.sendall(b'{"read": 1000000}\n')  # no token: its first line is taken as the token, and fails
        wrong = _connect(server.address)
        wrong.sendall(b"0" * 32 + b'\n{"read": 1000000}\n')
        sender = ReceiptSender(server.address)
        sender.sock.sendall(b'not json\n[1, 2]\n')
        sender.send({"read": 3, "accepted": 2})
        assert server.get(timeout=10) == {"read": 3, "accepted": 2}
        sender.close(), forger.close(), wrong.close()
        assert server.get(timeout=1) is None  # nothing else arrived
    finally:
        server.close()
