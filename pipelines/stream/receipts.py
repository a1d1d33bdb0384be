"""Count receipts from the job's Python functions to the local driver, over a TCP socket.

Each keyed function keeps a Counter of what it did since its last receipt and sends it as
one JSON line. The driver listens on 127.0.0.1 and sums what arrives, so each count is
reported once per run, at once (not at the next checkpoint, as a collect sink would) and
with nothing in the job's checkpointed state. Where a function cannot reach the driver
(a cluster), it sends nothing: the same counts are Flink metrics.
"""
from __future__ import annotations

import json
import queue
import socket
import threading


class ReceiptSender:
    """Function side: JSON lines to the driver's address, or nowhere if there is none."""

    def __init__(self, address: str | None):
        self.sock, self.lock = None, threading.Lock()
        if address:
            host, _, port = address.rpartition(":")
            try:
                self.sock = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                self.sock = None  # not reachable from here: metrics only

    def send(self, receipt: dict) -> None:
        if self.sock is None or not receipt:
            return
        with self.lock:
            try:
                self.sock.sendall(json.dumps(receipt).encode() + b"\n")
            except OSError:
                self.sock = None  # the driver went away; the job goes on

    def close(self) -> None:
        with self.lock:
            if self.sock is not None:
                self.sock.close()
                self.sock = None


class ReceiptServer:
    """Driver side: accepts the functions' connections; receipts() yields what they sent."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.queue: queue.Queue = queue.Queue()
        self.open_connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="receipts-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                self.open_connections += 1
            threading.Thread(target=self._read, args=(conn,), name="receipts-read", daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                self.queue.put(json.loads(line))
        with self.lock:
            self.open_connections -= 1

    def get(self, timeout: float) -> dict | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.listener.close()
