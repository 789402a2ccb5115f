"""A small HTTP/1.1 client for the Docker plugin API over a unix socket, with keep-alive:
one connection is reused for every call, as dockerd does."""

from __future__ import annotations

import json
import socket


class PluginError(Exception):
    def __init__(self, path: str, status: int, body):
        super().__init__(f"{path}: HTTP {status}: {body}")
        self.status = status
        self.body = body


class PluginClient:
    def __init__(self, path: str, timeout: float = 60):
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""
        self.reconnects = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None
        self.buf = b""

    def _connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s
        self.buf = b""

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed by the plugin")
            self.buf += chunk
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed by the plugin")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _roundtrip(self, path: str, body: bytes) -> tuple[int, dict, bytes]:
        req = (f"POST {path} HTTP/1.1\r\nHost: plugin\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self.sock.sendall(req)
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                data += self._read_exact(size)
                self._read_exact(2)
        else:
            data = self._read_exact(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data

    def call(self, path: str, payload=None):
        """POSTs payload as JSON; returns the decoded reply, raises PluginError on non-2xx."""
        body = b"" if payload is None else json.dumps(payload).encode()
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
                if attempt:
                    self.reconnects += 1
            try:
                status, _, data = self._roundtrip(path, body)
                break
            except (ConnectionResetError, BrokenPipeError):
                # A server that closed an idle keep-alive connection: retry once on a new one.
                self.close()
                if attempt:
                    raise
        decoded = json.loads(data) if data else None
        if not 200 <= status < 300:
            raise PluginError(path, status, decoded)
        return decoded
