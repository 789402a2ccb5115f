"""Labs of many idle networks, built and torn down the same way by every section that needs
one (scale, memory, idle CPU), and later by the `--scale N` runs of issue 17:

- `SocketLab`: a private supervisor, networks and joined endpoints made straight over its
  plugin socket (no Docker). The taps stay in the host namespace (Join gets a fake sandbox
  file), so it needs no containers and builds fast.
- `DockerLab`: networks of a Docker driver (`vde` or `bridge`) with containers on each,
  made through dockerd as a user would."""

from __future__ import annotations

import contextlib
import os
import secrets
import time

import procfs
from common import DOCKER, IMAGE, LABEL, Cleanup, Supervisor, plugin_taps, run, stats, timed
from plugin_client import PluginClient


def _subnet(octet: int, i: int) -> str:
    """Network i's /24: 10.<octet>.<i>.0/24 for the first 256, then on in 10.<octet + 1>..."""
    return f"10.{octet + i // 256}.{i % 256}.0/24"


def _check_room(networks: int, octet: int) -> None:
    if octet + (networks - 1) // 256 > 255:
        raise ValueError(f"{networks} networks do not fit from 10.{octet}.0.0 on (one /24 each)")


def subnets_in_use() -> list:
    """The IPv4 networks the host routes or has addresses in, and those of every Docker network
    (someone else's too): a lab's subnets must overlap none (dockerd refuses an overlapping
    bridge subnet, and a route there would take the lab's traffic)."""
    import ipaddress
    import json
    nets = []
    for line in run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("broadcast", "local", "unicast") and len(line.split()) > 1:
            word = line.split()[1]
        if word and word != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(word, strict=False))
    ids = run([DOCKER, "network", "ls", "-q"], check=False).stdout.split()
    if ids:
        out = run([DOCKER, "network", "inspect", "-f", "{{json .IPAM.Config}}", *ids], check=False).stdout
        for line in out.splitlines():
            for cfg in json.loads(line or "null") or []:
                with contextlib.suppress(ValueError, KeyError):
                    nets.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
    return nets


def check_subnets_free(networks: int, octet: int) -> None:
    """Raises when 10.<octet>.0.0 .. (one /24 per network) overlaps anything `subnets_in_use` names."""
    import ipaddress
    _check_room(networks, octet)
    last = ipaddress.ip_network(_subnet(octet, networks - 1))
    span = list(ipaddress.summarize_address_range(ipaddress.ip_address(f"10.{octet}.0.0"), last.broadcast_address))
    clash = [str(n) for n in subnets_in_use() if n.version == 4 and any(n.overlaps(s) for s in span)]
    if clash:
        raise RuntimeError(f"the lab's subnets 10.{octet}.0.0 .. {last} overlap {clash}: pick another --octet")


class SocketLab:
    """`networks` networks with `per_network` joined endpoints each over a private socket.
    Subnets: see `subnet`."""

    def __init__(self, sup: Supervisor, networks: int, per_network: int, octet: int = 236):
        _check_room(networks, octet)
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
            subnet = _subnet(self.octet, i)
            pool_id = client.request_pool(subnet)
            nid = secrets.token_hex(32)
            client.create_network(nid, subnet, subnet.replace(".0/24", ".1/24"))
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
    all labelled vde-bench=1. Subnets: see `subnet` (one network: 10.<octet>.0.0/16)."""

    def __init__(self, driver: str, networks: int, per_network: int, octet: int, cleanup: Cleanup,
                 two_in_last: int = 0, tag: str | None = None):
        """`two_in_last`: the last that many networks get a second container (the `--scale`
        shape: N networks of one container, the last 100 of two)."""
        _check_room(networks, octet)
        self.driver, self.networks, self.per_network, self.octet = driver, networks, per_network, octet
        self.two_in_last = two_in_last
        self.tag = tag or f"vdeb-sc-{driver}-{networks}x{per_network}"
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
            subnet = _subnet(self.octet, i) if self.networks > 1 else f"10.{self.octet}.0.0/16"
            dt, _ = timed([DOCKER, "network", "create", "-d", self.driver, "--subnet", subnet, "--label", LABEL, name])
            self.net_names.append(name)
            net_times.append(dt)
        t_nets = time.perf_counter() - t_build
        for i, net in enumerate(self.net_names):
            for j in range(self.containers_in(i)):
                cname = f"{net}-c{j}"
                dt, _ = timed([DOCKER, "run", "-d", "--name", cname, "--label", LABEL, "--net", net, IMAGE,
                               "sleep", "3600"])
                self.ctr_names.append(cname)
                ctr_times.append(dt)
        build_s = time.perf_counter() - t_build
        return {"driver": self.driver, "networks": self.networks, "containers_per_network": self.per_network,
                "containers": len(self.ctr_names), "build_s": build_s, "per_network_s": build_s / self.networks,
                "networks_build_s": t_nets, "containers_build_s": build_s - t_nets,
                "network_create_s": stats(net_times), "container_run_s": stats(ctr_times)}

    def containers_in(self, index: int) -> int:
        """How many containers network `index` has."""
        return max(self.per_network, 2 if index >= self.networks - self.two_in_last else 0)

    def address_of(self, container: str) -> str:
        return run([DOCKER, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    container]).stdout.strip()

    def pings(self, container: str, address: str) -> bool:
        """Whether `container` gets an echo reply from `address` (one probe, 2 s)."""
        return run([DOCKER, "exec", container, "ping", "-c", "1", "-W", "2", address], check=False).returncode == 0

    def isolation_check(self, index: int) -> dict:
        """Network `index`'s first container pings the first container of each neighbouring
        network (index - 1, index + 1): every probe must fail (`isolated`). Across vde networks
        nothing routes; across bridge networks the host would, and Docker's isolation rules drop it."""
        out: dict = {"network": index, "reached": []}
        src = f"{self.net_names[index]}-c0"
        for j in (index - 1, index + 1):
            if 0 <= j < self.networks:
                peer = self.address_of(f"{self.net_names[j]}-c0")
                if self.pings(src, peer):
                    out["reached"].append(f"{self.net_names[j]}-c0 ({peer})")
                out.setdefault("tried", []).append(peer)
        out["isolated"] = bool(out.get("tried")) and not out["reached"]
        return out

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
        """Whether container c0 of network `index` reaches c1 (None with one container)."""
        if self.containers_in(index) < 2:
            return None
        net = self.net_names[index]
        return self.pings(f"{net}-c0", self.address_of(f"{net}-c1"))

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


def leftover_check(sup: Supervisor | None, taps_before: set[str], tap_names: set[str]) -> dict:
    """What a torn-down lab left: new `vde…` taps, its own taps, and (with `sup`) the
    supervisor's processes of networks and run dir entries. `clean` when nothing. New taps
    whose names the lab does not know count only when it knows none (`tap_names` empty): other
    labs on the machine (another helper's private supervisor) make `vde…` taps meanwhile."""
    taps_now = plugin_taps()
    out = {"new_vde_taps": sorted(taps_now - taps_before), "our_taps_present": sorted(taps_now & tap_names)}
    if sup:
        out |= sup.leftovers()
    out["clean"] = (bool(tap_names) or not out["new_vde_taps"]) and not out["our_taps_present"] and \
        not out.get("processes") and not out.get("run_dir_entries")
    return out
