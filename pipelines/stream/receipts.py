"""Count receipts from the job's Python functions to the local driver, over a TCP socket.

Each keyed function keeps a Counter of what it did since its last receipt and sends it as
one JSON line. The driver listens on 127.0.0.1 and sums what arrives, so each count is
reported once per run, at once (not at the next checkpoint, as a collect sink would) and
with nothing in the job's checkpointed state. Where a function cannot reach the driver
(a cluster), it sends nothing: the same counts are Flink metrics.

The address the functions get is ``host:port#token``: a connection's first line must be the
run's random token, so another local user cannot forge a job's counts; lines that are not
JSON objects are dropped.
"""
from __future__ import annotations

import hmac
import json
import logging
import queue
import secrets
import socket
import threading

LOG = logging.getLogger("recstream.receipts")


class ReceiptSender:
    """Function side: JSON lines to the driver's address, or nowhere if there is none."""

    def __init__(self, address: str | None):
        self.sock, self.lock = None, threading.Lock()
        if address:
            where, _, token = address.partition("#")
            host, _, port = where.rpartition(":")
            try:
                self.sock = socket.create_connection((host, int(port)), timeout=5)
                self.sock.sendall(token.encode() + b"\n")
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
        self.token = secrets.token_hex(16)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}#{self.token}"  # what the functions get
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
        try:
            with conn, conn.makefile("rb") as lines:
                if not hmac.compare_digest(lines.readline().strip(), self.token.encode()):
                    LOG.warning("a connection to the count receipts without the run's token was refused")
                    return
                for line in lines:
                    try:
                        receipt = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(receipt, dict):
                        self.queue.put(receipt)
        except OSError:
            pass  # the sender went away
        finally:
            with self.lock:
                self.open_connections -= 1

    def get(self, timeout: float) -> dict | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.listener.close()
