"""The benchmarks' one client for the plugin's unix sockets: HTTP/1.1 with keep-alive (one
connection reused for every call, as dockerd does), the plugin API calls with the payloads
dockerd sends, and GET for the control socket (`/v1/status`). Used by bench/lib/* and
bench/recovery."""

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

    def _roundtrip(self, method: str, path: str, body: bytes) -> tuple[int, dict, bytes]:
        req = (f"{method} {path} HTTP/1.1\r\nHost: plugin\r\n"
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

    def call(self, path: str, payload=None, method: str = "POST"):
        """Sends payload as JSON; returns the decoded reply, raises PluginError on non-2xx or
        on a reply that carries an `Err`."""
        body = b"" if payload is None else json.dumps(payload).encode()
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
                if attempt:
                    self.reconnects += 1
            try:
                status, _, data = self._roundtrip(method, path, body)
                break
            except (ConnectionResetError, BrokenPipeError):
                # A server that closed an idle keep-alive connection: retry once on a new one.
                self.close()
                if attempt:
                    raise
        decoded = json.loads(data) if data else None
        if not 200 <= status < 300 or (isinstance(decoded, dict) and decoded.get("Err")):
            raise PluginError(path, status, decoded)
        return decoded

    # --- the plugin API as dockerd calls it --------------------------------------------------

    def answers(self) -> bool:
        """True when the plugin answers GetCapabilities (on a fresh connection)."""
        try:
            self.close()
            self.call("/NetworkDriver.GetCapabilities")
            return True
        except (OSError, PluginError, ValueError):
            self.close()
            return False

    def request_pool(self, subnet: str) -> str:
        return self.call("/IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": subnet})["PoolID"]

    def release_pool(self, pool_id: str) -> None:
        self.call("/IpamDriver.ReleasePool", {"PoolID": pool_id})

    def request_address(self, pool_id: str, address: str = "") -> str:
        """An address with its prefix length (a.b.c.d/n)."""
        return self.call("/IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": address, "Options": {}})["Address"]

    def release_address(self, pool_id: str, address: str) -> None:
        self.call("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address})

    def create_network(self, network_id: str, pool: str, gateway: str, options: dict | None = None) -> None:
        self.call("/NetworkDriver.CreateNetwork", {
            "NetworkID": network_id,
            "Options": {"com.docker.network.generic": options or {}, "com.docker.network.enable_ipv6": False},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gateway, "AuxAddresses": {}}],
            "IPv6Data": []})

    def delete_network(self, network_id: str) -> None:
        self.call("/NetworkDriver.DeleteNetwork", {"NetworkID": network_id})

    def create_endpoint(self, network_id: str, endpoint_id: str, address: str) -> dict:
        """Returns the reply's `Interface` (the MAC the plugin chose)."""
        reply = self.call("/NetworkDriver.CreateEndpoint", {
            "NetworkID": network_id, "EndpointID": endpoint_id,
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""}, "Options": {}})
        return (reply or {}).get("Interface") or {}

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self.call("/NetworkDriver.DeleteEndpoint", {"NetworkID": network_id, "EndpointID": endpoint_id})

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str) -> dict:
        """Returns the reply (`InterfaceName.SrcName` is the tap)."""
        return self.call("/NetworkDriver.Join", {"NetworkID": network_id, "EndpointID": endpoint_id,
                                                 "SandboxKey": sandbox_key, "Options": {}})

    def leave(self, network_id: str, endpoint_id: str) -> None:
        self.call("/NetworkDriver.Leave", {"NetworkID": network_id, "EndpointID": endpoint_id})

    # --- the control socket --------------------------------------------------------------------

    def status(self) -> dict:
        """`GET /v1/status` of the supervisor's control socket."""
        return self.call("/v1/status", method="GET")
