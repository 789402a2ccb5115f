"""Labs of many idle networks, built and torn down the same way by every section that needs
one (scale, memory, idle CPU), and later by the `--scale N` runs of issue 17:

- `SocketLab`: a private supervisor, networks and joined endpoints made straight over its
  plugin socket (no Docker). The taps stay in the host namespace (Join gets a fake sandbox
  file), so it needs no containers and builds fast.
- `DockerLab`: networks of a Docker driver (`vde` or `bridge`) with containers on each,
  made through dockerd as a user would."""

from __future__ import annotations

import os
import secrets
import time

import procfs
from common import DOCKER, IMAGE, LABEL, Cleanup, Supervisor, plugin_taps, run, stats, timed
from plugin_client import PluginClient


class SocketLab:
    """`networks` networks with `per_network` joined endpoints each over a private socket.
    Subnets are 10.<octet>.<i>.0/24, so at most 256 networks per octet."""

    def __init__(self, sup: Supervisor, networks: int, per_network: int, octet: int = 236):
        if networks > 256:
            raise ValueError("SocketLab: at most 256 networks (one /24 each in 10.<octet>.0.0/16)")
        self.sup, self.networks, self.per_network, self.octet = sup, networks, per_network, octet
        self.nets: list[tuple[str, str, list[tuple[str, str]]]] = []  # (network ID, pool ID, [(endpoint ID, address)])
        self.tap_names: set[str] = set()
        self.taps_before: set[str] = set()

    def build(self, client: PluginClient) -> float:
        """Creates everything; returns the seconds it took."""
        self.taps_before = plugin_taps()
        sandbox = os.path.join(self.sup.workdir, "fake-sandbox")  # Join only records the key
        open(sandbox, "w").close()
        t0 = time.perf_counter()
        for i in range(self.networks):
            subnet = f"10.{self.octet}.{i}.0/24"
            pool_id = client.request_pool(subnet)
            nid = secrets.token_hex(32)
            client.create_network(nid, subnet, f"10.{self.octet}.{i}.1/24")
            eps = []
            for _ in range(self.per_network):
                eid = secrets.token_hex(32)
                address = client.request_address(pool_id)
                client.create_endpoint(nid, eid, address)
                client.join(nid, eid, sandbox)
                eps.append((eid, address.split("/")[0]))
                self.tap_names.add("vde" + eid[:12])
            self.nets.append((nid, pool_id, eps))
        return time.perf_counter() - t0

    def teardown(self, client: PluginClient) -> float:
        """Removes everything as dockerd would; returns the seconds it took."""
        t0 = time.perf_counter()
        while self.nets:
            nid, pool_id, eps = self.nets.pop()
            for eid, address in eps:
                client.leave(nid, eid)
                client.delete_endpoint(nid, eid)
                client.release_address(pool_id, address)
            client.delete_network(nid)
            client.release_pool(pool_id)
        return time.perf_counter() - t0


class DockerLab:
    """`networks` Docker networks of `driver` with `per_network` containers (`sleep 3600`) each,
    all labelled vde-bench=1. Subnets 10.<octet>.<i>.0/24 (one network: 10.<octet>.0.0/16)."""

    def __init__(self, driver: str, networks: int, per_network: int, octet: int, cleanup: Cleanup):
        if networks > 256:
            raise ValueError("DockerLab: at most 256 networks (one /24 each in 10.<octet>.0.0/16)")
        self.driver, self.networks, self.per_network, self.octet = driver, networks, per_network, octet
        self.tag = f"vdeb-sc-{driver}-{networks}x{per_network}"
        self.net_names: list[str] = []
        self.ctr_names: list[str] = []
        self.cleanup = cleanup
        self.taps_before: set[str] = set()
        cleanup.push(f"lab {self.tag}", self._remove_all)

    def _remove_all(self) -> None:
        if self.ctr_names:
            run([DOCKER, "rm", "-f", *self.ctr_names], check=False, timeout=900)
        if self.net_names:
            run([DOCKER, "network", "rm", *self.net_names], check=False, timeout=900)

    def build(self) -> dict:
        """Creates the networks, then the containers; returns the timings."""
        self.taps_before = plugin_taps()
        net_times, ctr_times = [], []
        t_build = time.perf_counter()
        for i in range(self.networks):
            name = f"{self.tag}-n{i}"
            subnet = f"10.{self.octet}.{i}.0/24" if self.networks > 1 else f"10.{self.octet}.0.0/16"
            dt, _ = timed([DOCKER, "network", "create", "-d", self.driver, "--subnet", subnet, "--label", LABEL, name])
            self.net_names.append(name)
            net_times.append(dt)
        t_nets = time.perf_counter() - t_build
        for net in self.net_names:
            for j in range(self.per_network):
                cname = f"{net}-c{j}"
                dt, _ = timed([DOCKER, "run", "-d", "--name", cname, "--label", LABEL, "--net", net, IMAGE,
                               "sleep", "3600"])
                self.ctr_names.append(cname)
                ctr_times.append(dt)
        build_s = time.perf_counter() - t_build
        return {"driver": self.driver, "networks": self.networks, "containers_per_network": self.per_network,
                "build_s": build_s, "networks_build_s": t_nets, "containers_build_s": build_s - t_nets,
                "network_create_s": stats(net_times), "container_run_s": stats(ctr_times)}

    def container_ids(self) -> list[str]:
        if not self.ctr_names:
            return []
        return run([DOCKER, "inspect", "-f", "{{.Id}}", *self.ctr_names]).stdout.split()

    def endpoint_taps(self) -> set[str]:
        """The taps the plugin made: `vde` + 12 characters of each endpoint ID."""
        taps: set[str] = set()
        for net in self.net_names:
            eps = run([DOCKER, "network", "inspect", "-f", "{{range .Containers}}{{.EndpointID}} {{end}}", net]).stdout.split()
            taps |= {"vde" + e[:12] for e in eps}
        return taps

    def ping_check(self, index: int = 0) -> bool | None:
        """Whether the containers of network `index` reach each other (None with one container)."""
        net = self.net_names[index]
        addrs = run([DOCKER, "network", "inspect", "-f", "{{range .Containers}}{{.IPv4Address}} {{end}}", net]).stdout.split()
        if len(addrs) < 2:
            return None
        peers = {a.split("/")[0] for a in addrs}
        mine = run([DOCKER, "exec", f"{net}-c0", "hostname", "-i"], check=False).stdout.split()
        peer = next((p for p in sorted(peers) if p not in mine), None)
        if peer is None:
            return None
        return run([DOCKER, "exec", f"{net}-c0", "ping", "-c", "1", "-W", "2", peer], check=False).returncode == 0

    def teardown(self) -> dict:
        t0 = time.perf_counter()
        run([DOCKER, "rm", "-f", *self.ctr_names], timeout=900)
        containers_rm_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        run([DOCKER, "network", "rm", *self.net_names], timeout=900)
        networks_rm_s = time.perf_counter() - t1
        self.ctr_names.clear()
        self.net_names.clear()
        self.cleanup.actions = [a for a in self.cleanup.actions if a[0] != f"lab {self.tag}"]
        return {"containers_rm_s": containers_rm_s, "networks_rm_s": networks_rm_s,
                "teardown_s": time.perf_counter() - t0}


def docker_processes(container_ids: list[str]) -> dict[int, tuple[str, list[str]]]:
    """Docker's processes that serve these containers: dockerd, containerd (shared by all) and
    the containers' shims (one per container; argv holds `-id <container ID>`)."""
    ids = set(container_ids)
    found = {}
    for pid, (kind, argv) in procfs.processes(procfs.DOCKER_KINDS).items():
        if kind.startswith("containerd-shim"):
            if "-id" in argv and argv.index("-id") + 1 < len(argv) and argv[argv.index("-id") + 1] in ids:
                found[pid] = ("containerd-shim", argv)
        elif kind in ("dockerd", "containerd"):
            found[pid] = (kind, argv)
    return found
