"""The floor of the control plane: a Docker network + IPAM plugin that does the minimum dockerd
needs and nothing else. What `docker network create`/`rm` and `docker run` cost with it is what
dockerd itself costs with any remote plugin; bench/lib/controlplane.py measures the vde plugin
against it (issue 17: within 1.1x).

It answers every call at once from memory: no state file, no worker, no switch. The one real
thing it makes is the interface dockerd moves into the container at Join: a tap, made by two
ioctls on /dev/net/tun (TUNSETIFF; the vde worker uses the same ioctls). The floor keeps the tap's
file descriptor open instead of making it persistent, so:
- creating it is one open + one ioctl (no netlink round trips, no process),
- deleting it is a close(), done after DeleteEndpoint has been answered (as the vde plugin
  answers before its worker deletes the tap: unregistering a net device takes the kernel
  milliseconds, `--measure-taps` shows how many),
- the kernel deletes every tap when this process ends, even on SIGKILL.
A veth pair would need rtnetlink messages (RTM_NEWLINK with nested IFLA_LINKINFO) and makes two
devices, the host end of which dockerd leaves behind; a tap is one device and two syscalls.

Usage: python3 bench/lib/floor_plugin.py [--socket /run/docker/plugins/vdefloor.sock]
           docker network create -d vdefloor --ipam-driver vdefloor --subnet 10.1.2.0/24 NET
       python3 bench/lib/floor_plugin.py --measure-taps 200   (tap create/delete cost, no socket)
It removes its socket and taps on exit, SIGTERM and Ctrl-C."""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import queue
import signal
import socketserver
import statistics
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

DEFAULT_SOCKET = "/run/docker/plugins/vdefloor.sock"
TAP_PREFIX = "flrt"  # + 11 hex of the endpoint ID: 15 characters, the kernel's limit

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"


# --- taps ------------------------------------------------------------------------------------

def open_tap(name: str) -> int:
    """A tap named `name` that lives as long as the returned descriptor stays open."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class TapCloser(threading.Thread):
    """Closes tap descriptors (so deletes the taps) one after the other, off the request path."""

    def __init__(self) -> None:
        super().__init__(name="tap-closer", daemon=True)
        self.fds: queue.Queue[int | None] = queue.Queue()

    def run(self) -> None:
        while (fd := self.fds.get()) is not None:
            os.close(fd)

    def finish(self) -> None:
        self.fds.put(None)
        self.join(timeout=30)


def measure_taps(count: int) -> dict:
    """Milliseconds to create a tap (open + TUNSETIFF) and to delete it (close), `count` times."""
    create, delete = [], []
    for i in range(count):
        t0 = time.perf_counter()
        fd = open_tap(f"{TAP_PREFIX}m{i:06d}")
        t1 = time.perf_counter()
        os.close(fd)
        t2 = time.perf_counter()
        create.append((t1 - t0) * 1000)
        delete.append((t2 - t1) * 1000)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)}
            for k, v in (("create", create), ("delete", delete))}


# --- the plugin --------------------------------------------------------------------------------

class Floor:
    """What dockerd needs remembered: pools (to hand out addresses), each network's gateway
    (Join returns it, else dockerd adds a docker_gwbridge interface), each endpoint's tap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pools: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, set]] = {}
        self.gateways: dict[str, str] = {}
        self.taps: dict[str, tuple[str, int]] = {}  # endpoint ID -> (tap name, fd)
        self.closer = TapCloser()
        self.closer.start()
        self.next_default = 0

    # IPAM
    def request_pool(self, req: dict) -> dict:
        with self.lock:
            pool = req.get("Pool") or ""
            if not pool:  # no --subnet: a /24 of 10.239.0.0/16 not handed out yet
                while True:
                    pool = f"10.239.{self.next_default % 256}.0/24"
                    self.next_default += 1
                    if pool not in self.pools:
                        break
            net = ipaddress.ip_network(pool, strict=False)
            self.pools[pool] = (net, set())
            return {"PoolID": pool, "Pool": str(net), "Data": {}}

    def release_pool(self, req: dict) -> dict:
        with self.lock:
            self.pools.pop(req["PoolID"], None)
        return {}

    def request_address(self, req: dict) -> dict:
        with self.lock:
            net, used = self.pools[req["PoolID"]]
            if req.get("Address"):
                addr = ipaddress.ip_address(req["Address"])
            else:
                addr = next((a for a in net.hosts() if a not in used), None)
                if addr is None:
                    raise LookupError(f"pool {net} is full")
            used.add(addr)
            return {"Address": f"{addr}/{net.prefixlen}", "Data": {}}

    def release_address(self, req: dict) -> dict:
        with self.lock:
            if req["PoolID"] in self.pools:
                self.pools[req["PoolID"]][1].discard(ipaddress.ip_address(req["Address"]))
        return {}

    # NetworkDriver
    def create_network(self, req: dict) -> dict:
        gw = next((d.get("Gateway") for d in (req.get("IPv4Data") or []) if d.get("Gateway")), None)
        with self.lock:
            if gw:
                self.gateways[req["NetworkID"]] = gw.split("/")[0]
        return {}

    def delete_network(self, req: dict) -> dict:
        with self.lock:
            self.gateways.pop(req["NetworkID"], None)
        return {}

    def create_endpoint(self, req: dict) -> dict:
        name = TAP_PREFIX + req["EndpointID"][:11]
        fd = open_tap(name)
        with self.lock:
            self.taps[req["EndpointID"]] = (name, fd)
        return {}

    def join(self, req: dict) -> dict:
        with self.lock:
            name, _ = self.taps[req["EndpointID"]]
            reply = {"InterfaceName": {"SrcName": name, "DstPrefix": "eth"}}
            if gw := self.gateways.get(req["NetworkID"]):
                reply["Gateway"] = gw
        return reply

    def delete_endpoint(self, req: dict) -> dict:
        with self.lock:
            entry = self.taps.pop(req["EndpointID"], None)
        if entry:
            self.closer.fds.put(entry[1])  # deleted after the reply
        return {}

    def close(self) -> None:
        with self.lock:
            fds = [fd for _, fd in self.taps.values()]
            self.taps.clear()
        for fd in fds:
            self.closer.fds.put(fd)
        self.closer.finish()

    def routes(self) -> dict:
        empty = lambda _req: {}  # noqa: E731
        return {
            "/Plugin.Activate": lambda _r: {"Implements": ["NetworkDriver", "IpamDriver"]},
            "/NetworkDriver.GetCapabilities": lambda _r: {"Scope": "local", "ConnectivityScope": "local"},
            "/NetworkDriver.CreateNetwork": self.create_network,
            "/NetworkDriver.DeleteNetwork": self.delete_network,
            "/NetworkDriver.CreateEndpoint": self.create_endpoint,
            "/NetworkDriver.EndpointOperInfo": lambda _r: {"Value": {}},
            "/NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "/NetworkDriver.Join": self.join,
            "/NetworkDriver.Leave": empty,
            "/NetworkDriver.ProgramExternalConnectivity": empty,
            "/NetworkDriver.RevokeExternalConnectivity": empty,
            "/NetworkDriver.DiscoverNew": empty,
            "/NetworkDriver.DiscoverDelete": empty,
            "/IpamDriver.GetCapabilities": lambda _r: {"RequiresMACAddress": False, "RequiresRequestReplay": False},
            "/IpamDriver.GetDefaultAddressSpaces": lambda _r: {"LocalDefaultAddressSpace": "floorlocal",
                                                               "GlobalDefaultAddressSpace": "floorglobal"},
            "/IpamDriver.RequestPool": self.request_pool,
            "/IpamDriver.ReleasePool": self.release_pool,
            "/IpamDriver.RequestAddress": self.request_address,
            "/IpamDriver.ReleaseAddress": self.release_address,
        }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd's client uses it
    routes: dict = {}
    verbose = False

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        t0 = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        route = self.routes.get(self.path)
        if route is None:
            status, reply = 404, {"Err": f"unknown call {self.path}"}
        else:
            try:
                status, reply = 200, route(json.loads(raw) if raw else {})
            except Exception as e:  # noqa: BLE001 - every error is a reply to dockerd
                status, reply = 500, {"Err": f"{type(e).__name__}: {e}", "Error": f"{type(e).__name__}: {e}"}
        body = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.verbose:
            print(f"{time.strftime('%H:%M:%S')} {self.path} {status} {(time.perf_counter() - t0) * 1000:.3f} ms",
                  file=sys.stderr, flush=True)

    def log_message(self, *_args) -> None:  # the stdlib logs every request to stderr: not here
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(socket_path: str, verbose: bool) -> int:
    floor = Floor()
    Handler.routes = floor.routes()
    Handler.verbose = verbose
    os.makedirs(os.path.dirname(socket_path), exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server = Server(socket_path, Handler)

    def stop(signum, _frame):
        # shutdown() waits for serve_forever to return: from another thread, not this handler.
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    print(f"vdefloor: serving {socket_path}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        floor.close()
        print("vdefloor: stopped; socket and taps removed", file=sys.stderr, flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", default=DEFAULT_SOCKET)
    ap.add_argument("--verbose", action="store_true", help="one line per call with its milliseconds")
    ap.add_argument("--measure-taps", type=int, metavar="N", help="time N tap creations and deletions, then exit")
    args = ap.parse_args()
    if args.measure_taps:
        print(json.dumps(measure_taps(args.measure_taps), indent=1))
        return 0
    return serve(args.socket, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
