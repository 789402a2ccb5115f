"""Issue 16: one network across hosts, with hosts simulated on this machine.

Each simulated host is a network namespace (`bh-*`) running a supervisor of our own (its own
plugin socket, run and state dirs, control socket), driven over the plugin API as dockerd
would: RequestPool (vde IPAM, one `--ip-range` per host), CreateNetwork with `-o uplink=URL`,
CreateEndpoint, Join, then the tap moved into a "container" namespace and renamed `ethN`. The
hosts' one interface is their underlay: a veth pair (two hosts) or a veth to a Linux bridge in
a namespace of its own (more hosts). Nothing else is in those namespaces, so no test frame can
leave the machine; every multicast uplink is pinned to that veth with `/if=` (ttl 1, the
default) besides. Multicast groups 239.255.36.0/24, veths `vxb*`.

Three parts:
- `mtu`: per scheme, pings with DF at the largest IP packet the uplink's `defaultMTU` promises
  and one byte more, on taps at MTU 1500: underlay packets per frame and datagrams reassembled
  on the receiving host; and the MTU a network gets without `-o com.docker.network.driver.mtu`.
- `pairs`: iperf3 TCP and ping between two hosts over vxvde:// and udp://, against the same
  pair of namespaces on ONE switch (a network without uplink on host A with a tap in each),
  interleaved in the same run; CPU of the uplinks (`vde_plug`) and switches meanwhile; PSS of
  the uplinks idle and after the load.
- `fanout`: 2, 4 and 8 hosts on one vxvde group: setup time, time until host 0 reaches every
  other host, a broadcast flood from host 0 (frames each host receives, CPU of every uplink),
  and what a unicast exchange between two hosts costs the bystanders.

  python3 bench/lib/multihost.py --bin-dir .build/release [--quick]   # standalone, no Docker
  python3 bench/lib/multihost.py --report bench/results/latest.json  # its tables of a run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfs  # noqa: E402
from common import stop_like_ctrl_c, Cleanup, Supervisor, log, ratio, run, stats, stop_process, write_json  # noqa: E402
from dataplane import Path, _ping, iperf_tcp  # noqa: E402
from plugin_client import PluginClient  # noqa: E402

GROUP = "239.255.36."  # ours alone (helper brief): .1-.9 the pairs, .10+ the fanout
UNDERLAY = "169.254.36."  # host i has .(i + 1)/24 on its underlay veth
UDP_PORT = 5036
MTU_SIZES_ABOVE = 1  # bytes above the promised MTU that are probed


# --- simulated hosts ----------------------------------------------------------------------------

def _netns(name: str, cleanup: Cleanup) -> str:
    run(["ip", "netns", "add", name])
    cleanup.push(f"netns {name}", lambda: run(["ip", "netns", "del", name], check=False))
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    return f"/run/netns/{name}"


@dataclass
class Endpoint:
    eid: str
    ip: str  # without prefix length
    ns: str  # the container's netns name
    ifname: str
    mtu: int


@dataclass
class Net:
    host: "Host"
    nid: str
    pool: str
    url: str | None
    subnet: str
    gateway: str  # a.b.c.d/n
    endpoints: list[Endpoint] = field(default_factory=list)
    hand_uplink: subprocess.Popen | None = None

    @property
    def ctl(self) -> str:
        return os.path.join(self.host.sup.run_dir, self.nid[:12], "ctl")

    def uplink_pids(self) -> list[int]:
        """The uplink: `vde_plug vde://CTL URL`, whoever started it."""
        marker = f"vde://{self.ctl}"
        return [pid for pid, (_, argv) in procfs.processes(("vde_plug",)).items() if marker in argv]

    def switch_pids(self) -> list[int]:
        """The switch and the endpoints' plugs (not the uplink)."""
        return [pid for pid, (kind, _) in procfs.processes_under(os.path.dirname(self.ctl)).items()
                if kind in ("vde_switch", "vde_plug2tap")]


class Host:
    """A simulated host: netns `name` with its underlay veth `iface` at `addr`, a supervisor in it."""

    def __init__(self, name: str, iface: str, index: int, bin_dir: str, cleanup: Cleanup):
        self.name, self.iface, self.index = name, iface, index
        self.addr = f"{UNDERLAY}{index + 1}"
        self.sup = Supervisor(bin_dir, netns=name)
        self.cleanup = cleanup
        self.client: PluginClient | None = None
        self.containers: set[str] = set()  # container netns made by this host

    def start(self) -> float:
        t0 = time.perf_counter()
        self.cleanup.push(f"supervisor in {self.name}", self.stop)
        self.sup.start()
        self.client = PluginClient(self.sup.socket_path)
        return time.perf_counter() - t0

    def stop(self) -> None:
        if self.client:
            self.client.close()
        self.sup.stop()
        # An uplink outlives its worker by design; after stop-networks none may be left.
        left = [pid for pid, (_, argv) in procfs.processes(("vde_plug",)).items()
                if any(self.sup.run_dir in a for a in argv)]
        for pid in left:
            log(f"{self.name}: uplink {pid} still ran after stop-networks; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.sup.remove_workdir()

    def container(self, suffix: str) -> str:
        name = f"{self.name}-{suffix}"
        if name not in self.containers:
            _netns(name, self.cleanup)
            self.containers.add(name)
        return name

    def create_network(self, subnet: str, ip_range: str, url: str | None, mtu: int | None = None) -> Net:
        options = {"uplink": url} if url else {}
        if mtu:
            options["com.docker.network.driver.mtu"] = str(mtu)
        pool = self.client.call("/IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": subnet,
                                                            "SubPool": ip_range, "Options": {}, "V6": False})["PoolID"]
        # dockerd asks for the gateway first (the same on every host: the vde IPAM never hands it out).
        gateway = self.client.call("/IpamDriver.RequestAddress", {
            "PoolID": pool, "Address": subnet.replace(".0/", ".1/").split("/")[0],
            "Options": {"RequestAddressType": "com.docker.network.gateway"}})["Address"]
        nid = secrets.token_hex(32)
        self.client.create_network(nid, subnet, gateway, options)
        return Net(self, nid, pool, url, subnet, gateway)

    def attach(self, net: Net, container: str) -> Endpoint:
        """CreateEndpoint + Join, then what dockerd does: the tap into the container, renamed, addressed, up."""
        eid = secrets.token_hex(32)
        address = self.client.request_address(net.pool)
        self.client.create_endpoint(net.nid, eid, address)
        tap = self.client.join(net.nid, eid, f"/run/netns/{container}")["InterfaceName"]["SrcName"]
        ifname = _next_ifname(container)
        run(["ip", "-n", self.name, "link", "set", tap, "netns", container])
        run(["ip", "-n", container, "link", "set", tap, "name", ifname])
        run(["ip", "-n", container, "addr", "add", address, "dev", ifname])
        run(["ip", "-n", container, "link", "set", ifname, "up"])
        ep = Endpoint(eid, address.split("/")[0], container, ifname, link_mtu(container, ifname))
        net.endpoints.append(ep)
        return ep

    def remove_network(self, net: Net) -> None:
        """As dockerd does when the containers go and then the network."""
        for ep in net.endpoints:
            run(["ip", "-n", ep.ns, "link", "del", ep.ifname], check=False)  # the container's end
            self.client.leave(net.nid, ep.eid)
            self.client.delete_endpoint(net.nid, ep.eid)
            self.client.release_address(net.pool, ep.ip)
        net.endpoints.clear()
        self.client.delete_network(net.nid)
        self.client.release_address(net.pool, net.gateway.split("/")[0])
        self.client.release_pool(net.pool)
        if net.hand_uplink:
            stop_process(net.hand_uplink)


def ensure_uplink(net: Net, wait: float = 5) -> int:
    """The uplink's pid: the worker's (polled for `wait` s), else one started by hand as the
    worker would (`vde_plug vde://CTL URL` in the host's netns), for builds before the worker's
    uplink (issue 16) landed; `net.hand_uplink` says which."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pids = net.uplink_pids()
        if pids:
            return pids[0]
        time.sleep(0.05)
    log(f"{net.host.name}: no uplink from the worker within {wait:.0f}s; starting vde_plug by hand")
    net.hand_uplink = subprocess.Popen(["ip", "netns", "exec", net.host.name, "vde_plug", f"vde://{net.ctl}", net.url],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
    proc = net.hand_uplink
    net.host.cleanup.push("hand uplink", lambda: stop_process(proc))
    for _ in range(100):
        pids = net.uplink_pids()
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise RuntimeError(f"{net.host.name}: the hand-started uplink {net.url} did not come up")


def _next_ifname(ns: str) -> str:
    """`ethN` for the next interface of a container, as dockerd numbers them."""
    names = {link["ifname"] for link in json.loads(run(["ip", "-n", ns, "-j", "link", "show"]).stdout)}
    return next(f"eth{i}" for i in range(64) if f"eth{i}" not in names)


def link_mtu(ns: str, ifname: str) -> int:
    return json.loads(run(["ip", "-n", ns, "-j", "link", "show", ifname]).stdout)[0]["mtu"]


def link_counters(ns: str, ifname: str) -> tuple[int, int]:
    """(rx packets, tx packets) of an interface in a netns."""
    s = json.loads(run(["ip", "-n", ns, "-j", "-s", "link", "show", ifname]).stdout)[0]["stats64"]
    return s["rx"]["packets"], s["tx"]["packets"]


def reassembly(ns: str) -> tuple[int, int]:
    """(fragments received, datagrams reassembled from them) in a netns (Ip: ReasmReqds, ReasmOKs)."""
    lines = [l.split() for l in run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).stdout.splitlines()
             if l.startswith("Ip:")]
    return int(lines[1][lines[0].index("ReasmReqds")]), int(lines[1][lines[0].index("ReasmOKs")])


def two_hosts(bin_dir: str, cleanup: Cleanup) -> list[Host]:
    """bh-a and bh-b joined by the veth pair vxbA/vxbB."""
    for ns in ("bh-a", "bh-b"):
        _netns(ns, cleanup)
    run(["ip", "link", "add", "vxbA", "netns", "bh-a", "type", "veth", "peer", "name", "vxbB", "netns", "bh-b"])
    hosts = [Host("bh-a", "vxbA", 0, bin_dir, cleanup), Host("bh-b", "vxbB", 1, bin_dir, cleanup)]
    for h in hosts:
        _underlay_up(h)
    return hosts


def bridged_hosts(n: int, bin_dir: str, cleanup: Cleanup) -> list[Host]:
    """bh-h0..bh-h<n-1>, each with a veth vxb<i> to the bridge vxbr0 in netns bh-u. Snooping
    off: the bridge floods multicast to every port, as a switch without IGMP snooping does."""
    _netns("bh-u", cleanup)
    run(["ip", "-n", "bh-u", "link", "add", "vxbr0", "type", "bridge", "mcast_snooping", "0"])
    run(["ip", "-n", "bh-u", "link", "set", "vxbr0", "up"])
    hosts = []
    for i in range(n):
        h = Host(f"bh-h{i}", f"vxb{i}", i, bin_dir, cleanup)
        _netns(h.name, cleanup)
        run(["ip", "link", "add", h.iface, "netns", h.name, "type", "veth", "peer", "name", f"vxbu{i}", "netns", "bh-u"])
        run(["ip", "-n", "bh-u", "link", "set", f"vxbu{i}", "master", "vxbr0", "up"])
        _underlay_up(h)
        hosts.append(h)
    return hosts


def _underlay_up(h: Host) -> None:
    run(["ip", "-n", h.name, "link", "set", h.iface, "multicast", "on", "up"])
    run(["ip", "-n", h.name, "addr", "add", f"{h.addr}/24", "dev", h.iface])


def uplink_url(scheme: str, group: int, local: Host, remote: Host | None = None) -> str:
    if scheme == "udp":
        return f"udp://{UDP_PORT + group}->{remote.addr}:{UDP_PORT + group}"
    return f"{scheme}://{GROUP}{group}/if={local.iface}"


def wait_reachable(src: Endpoint, dst: Endpoint, timeout: float = 20) -> float:
    """Seconds until one ping from src to dst is answered (ARP across the uplink included)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if run(["ip", "netns", "exec", src.ns, "ping", "-c", "1", "-W", "0.5", dst.ip], check=False).returncode == 0:
            return time.perf_counter() - t0
    raise RuntimeError(f"{dst.ip} in {dst.ns} not reachable from {src.ns} within {timeout:.0f}s")


def pss_kb(pid: int) -> int | None:
    return procfs.smaps_rollup(pid).get("Pss")


def memory_kb(pid: int) -> dict:
    r = procfs.smaps_rollup(pid)
    return {"pss": r.get("Pss"), "rss": r.get("Rss"),
            "private": r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)}


# --- MTU ----------------------------------------------------------------------------------------

# UplinkURL.defaultMTU over IPv4. vxlan:// is refused by the plugin (vdeplug 4.0.1 sends no
# unicast over it; measured in runs 20261202-085931 and -090746, docs/multihost.md).
DEFAULT_MTU = {"vxvde": 1450, "udp": 1458}


def run_mtu(a: Host, b: Host, pings: int) -> dict:
    """Per scheme: a network at tap MTU 1500 and one with the default MTU."""
    out = {}
    for g, scheme in enumerate(("vxvde", "udp"), start=1):
        subnet = f"10.234.{g}.0/24"
        url_a, url_b = uplink_url(scheme, g, a, b), uplink_url(scheme, g, b, a)
        # The network's default MTU (no mtu option): what the taps get.
        na, nb = a.create_network(subnet, subnet.replace(".0/24", ".0/25"), url_a), \
            b.create_network(subnet, subnet.replace(".0/24", ".128/25"), url_b)
        ca, cb = a.container("mtu"), b.container("mtu")
        default_mtu = (a.attach(na, ca).mtu, b.attach(nb, cb).mtu)
        a.remove_network(na)
        b.remove_network(nb)
        # Taps at 1500: what crosses, and how.
        na, nb = a.create_network(subnet, subnet.replace(".0/24", ".0/25"), url_a, mtu=1500), \
            b.create_network(subnet, subnet.replace(".0/24", ".128/25"), url_b, mtu=1500)
        ea, eb = a.attach(na, ca), b.attach(nb, cb)
        ensure_uplink(na)
        ensure_uplink(nb)
        unicast_ok = _reach(ea, eb)
        # Should unicast fail, broadcast pings still reach the far host and are what the
        # underlay counts there (how vxlan:// was measured before the plugin refused it).
        broadcast = not unicast_ok
        promised = DEFAULT_MTU[scheme]
        time.sleep(1)  # the uplinks' start-up traffic (IGMP, the worker's announcements) passes
        rows = []
        for size in (promised, promised + MTU_SIZES_ABOVE, 1500):
            rows.append(_probe(ea, eb, b, size, pings, broadcast))
        out[scheme] = {"url_a": url_a, "default_mtu_taps": default_mtu, "promised_mtu": promised,
                       "unicast_ok": unicast_ok, "probe": "broadcast" if broadcast else "unicast", "sizes": rows,
                       "hand_uplink": bool(na.hand_uplink)}
        a.remove_network(na)
        b.remove_network(nb)
        log(f"mtu: {scheme}: default MTU {default_mtu}, unicast {'ok' if unicast_ok else 'FAILS'}, "
            + ", ".join(f"{r['ip_bytes']} B: {r['underlay_packets_per_frame']:.1f} pkt/frame" for r in rows))
    return out


def _reach(src: Endpoint, dst: Endpoint, tries: int = 6) -> bool:
    for _ in range(tries):
        if run(["ip", "netns", "exec", src.ns, "ping", "-c", "1", "-W", "0.5", dst.ip], check=False).returncode == 0:
            return True
    return False


def _probe(src: Endpoint, dst: Endpoint, far: Host, ip_bytes: int, pings: int, broadcast: bool) -> dict:
    """`pings` pings of `ip_bytes` with DF; the far host's underlay counts what arrived."""
    target = re.sub(r"\.\d+$", ".255", dst.ip) if broadcast else dst.ip
    rx0, _ = link_counters(far.name, far.iface)
    f0, r0 = reassembly(far.name)
    argv = ["ip", "netns", "exec", src.ns, "ping", "-M", "do", "-c", str(pings), "-i", "0.05", "-W", "1",
            "-s", str(ip_bytes - 28)] + (["-b"] if broadcast else []) + [target]
    out = run(argv, check=False).stdout
    time.sleep(0.3)  # the last replies and counters
    rx1, _ = link_counters(far.name, far.iface)
    f1, r1 = reassembly(far.name)
    got = re.search(r"(\d+) received", out)
    return {"ip_bytes": ip_bytes, "pings": pings, "replies": int(got.group(1)) if got and not broadcast else None,
            "underlay_rx": rx1 - rx0, "fragments": f1 - f0, "reassembled": r1 - r0,
            "underlay_packets_per_frame": (rx1 - rx0) / pings}


# --- two hosts: throughput and RTT --------------------------------------------------------------

def run_pairs(a: Host, b: Host, reps: int, seconds: int, pings: int) -> dict:
    ca, cb = a.container("c"), b.container("c")
    paths: list[tuple[Path, dict]] = []
    uplinks: dict[str, list[int]] = {}
    nets = []
    for g, scheme in ((3, "vxvde"), (4, "udp")):
        subnet = f"10.234.{g}.0/24"
        na = a.create_network(subnet, f"10.234.{g}.0/25", uplink_url(scheme, g, a, b))
        nb = b.create_network(subnet, f"10.234.{g}.128/25", uplink_url(scheme, g, b, a))
        ea, eb = a.attach(na, ca), b.attach(nb, cb)
        uplinks[scheme] = [ensure_uplink(na), ensure_uplink(nb)]
        wait_reachable(ea, eb)
        nets.append((scheme, na, nb))
        p = Path(scheme, f"/run/netns/{ca}", f"/run/netns/{cb}", ea.ip, eb.ip)
        paths.append((p, {"uplinks": uplinks[scheme], "switches": na.switch_pids() + nb.switch_pids()}))
    # The reference: the same two namespaces on one switch (host A's), no uplink.
    ref = a.create_network("10.234.5.0/24", "10.234.5.0/24", None)
    ea, eb = a.attach(ref, ca), a.attach(ref, cb)
    wait_reachable(ea, eb)
    paths.insert(0, (Path("one_switch", f"/run/netns/{ca}", f"/run/netns/{cb}", ea.ip, eb.ip),
                     {"switches": ref.switch_pids()}))
    mtus = {"one_switch": ea.mtu} | {s: na.endpoints[0].mtu for s, na, _ in nets}
    mem_idle = {s: [memory_kb(p) for p in pids] for s, pids in uplinks.items()}

    samples = {p.name: {"ping": [], "tcp_fwd": [], "tcp_rev": []} for p, _ in paths}
    for rep in range(reps):
        for p, roles in paths[rep % len(paths):] + paths[:rep % len(paths)]:
            log(f"multihost pairs: rep {rep + 1}/{reps}: {p.name}")
            samples[p.name]["ping"].append(_ping(p, pings))
            samples[p.name]["tcp_fwd"].append(iperf_tcp(p, seconds, False, roles))
            samples[p.name]["tcp_rev"].append(iperf_tcp(p, seconds, True, roles))
    mem_after = {s: [memory_kb(p) for p in pids] for s, pids in uplinks.items()}
    summary = {}
    for name, s in samples.items():
        tcp = s["tcp_fwd"] + s["tcp_rev"]
        summary[name] = {"ping_avg_ms": stats([x["avg_ms"] for x in s["ping"]]),
                         "ping_min_ms": stats([x["min_ms"] for x in s["ping"]]),
                         "tcp_fwd_mbit_s": stats([x["mbit_s"] for x in s["tcp_fwd"]]),
                         "tcp_rev_mbit_s": stats([x["mbit_s"] for x in s["tcp_rev"]]),
                         "cpu_pct": {role: stats([x["cpu_pct"][role] for x in tcp]) for role in tcp[0]["cpu_pct"]},
                         "tap_mtu": mtus[name], "samples": s}
    ref_s = summary["one_switch"]
    ratios = {name: {k: ratio(summary[name][k], ref_s[k])
                     for k in ("tcp_fwd_mbit_s", "tcp_rev_mbit_s", "ping_avg_ms", "ping_min_ms")}
              for name in summary if name != "one_switch"}
    for scheme, na, nb in nets:
        a.remove_network(na)
        b.remove_network(nb)
    a.remove_network(ref)
    return {"reps": reps, "iperf_seconds": seconds, "pings": pings, "paths": summary, "ratios": ratios,
            "uplink_memory_kb": {"idle": mem_idle, "after_load": mem_after},
            "hand_uplinks": any(n.hand_uplink for _, na, nb in nets for n in (na, nb))}


# --- many hosts ---------------------------------------------------------------------------------

def run_fanout(hosts: list[Host], sizes: list[int], flood: int) -> dict:
    """One vxvde network on the first k hosts for each k in `sizes` (a group each)."""
    out = {}
    for k in sizes:
        group = 10 + k
        subnet = f"10.234.{group}.0/24"
        block = 256 // 8  # one /27 per host, room for 8
        members = hosts[:k]
        log(f"multihost fanout: {k} hosts on {GROUP}{group}")
        t0 = time.perf_counter()
        nets, eps, create_s = [], [], []
        for h in members:
            t1 = time.perf_counter()
            net = h.create_network(subnet, f"10.234.{group}.{block * h.index}/27", uplink_url("vxvde", group, h))
            eps.append(h.attach(net, h.container("c")))
            create_s.append(time.perf_counter() - t1)
            nets.append(net)
        setup_s = time.perf_counter() - t0
        uplinks = [ensure_uplink(n) for n in nets]
        t2 = time.perf_counter()
        for ep in eps[1:]:
            wait_reachable(eps[0], ep)
        reach_s = time.perf_counter() - t2
        idle = _cpu_window(uplinks, 3.0)
        bcast = _broadcast_flood(eps, members, uplinks, flood)
        uni = _unicast_bystanders(eps, members, 200) if k > 2 else None
        out[str(k)] = {"hosts": k, "setup_s": setup_s, "per_host_create_join_s": stats(create_s),
                       "reach_all_from_host0_s": reach_s, "uplink_idle_cpu_pct": idle,
                       "uplink_pss_kb": stats([pss_kb(p) or 0 for p in uplinks]), "broadcast": bcast,
                       "unicast_bystanders": uni, "hand_uplinks": any(n.hand_uplink for n in nets)}
        log(f"multihost fanout: {k} hosts: setup {setup_s:.2f}s, all reachable after {reach_s:.2f}s more; "
            f"broadcast: {bcast['frames_per_receiver']} frames per receiver of {bcast['sent']}")
        t3 = time.perf_counter()
        for h, net in zip(members, nets):
            h.remove_network(net)
        out[str(k)]["teardown_s"] = time.perf_counter() - t3
    return out


def _cpu_window(pids: list[int], seconds: float) -> dict:
    c0 = {p: procfs.cpu_seconds(p) for p in pids}
    time.sleep(seconds)
    return stats([100 * (procfs.cpu_seconds(p) - c0[p]) / seconds for p in pids])


def _broadcast_flood(eps: list[Endpoint], hosts: list[Host], uplinks: list[int], count: int) -> dict:
    """`count` broadcast pings from host 0's container (the others ignore broadcast pings, the
    kernel's default: one frame each, no replies): what every container and underlay received."""
    bcast = re.sub(r"\.\d+$", ".255", eps[0].ip)
    before = [link_counters(e.ns, e.ifname)[0] for e in eps]
    under0 = [link_counters(h.name, h.iface) for h in hosts]
    cpu0 = {p: procfs.cpu_seconds(p) for p in uplinks}
    t0 = time.perf_counter()
    # iputils ping sends unanswered pings at about 60/s here whatever -i asks (measured): the
    # rate is reported as measured, and the cost per frame is what compares.
    sent = run(["ip", "netns", "exec", eps[0].ns, "ping", "-b", "-q", "-c", str(count), "-i", "0.01", "-W", "1", bcast],
               check=False, timeout=count * 0.05 + 60).stdout
    ping_ms = re.search(r"time (\d+)ms", sent)
    wall = time.perf_counter() - t0
    time.sleep(0.3)
    got = [link_counters(e.ns, e.ifname)[0] - b for e, b in zip(eps, before)]
    under1 = [link_counters(h.name, h.iface) for h in hosts]
    cpu_s = [procfs.cpu_seconds(p) - cpu0[p] for p in uplinks]
    cpu = [100 * c / wall for c in cpu_s]
    return {"sent": count, "seconds": wall, "rate_per_s": count / (int(ping_ms.group(1)) / 1000) if ping_ms else None,
            "frames_per_receiver": stats(got[1:]),
            "underlay_tx_sender": under1[0][1] - under0[0][1],
            "underlay_rx_per_host": stats([u1[0] - u0[0] for u0, u1 in zip(under0[1:], under1[1:])]),
            "uplink_cpu_pct_sender": cpu[0], "uplink_cpu_pct_receivers": stats(cpu[1:]),
            "uplink_cpu_pct_all": sum(cpu),
            # Per broadcast frame sent, independent of the rate (ping's wait for replies is in `seconds`).
            "uplink_cpu_us_per_frame_sender": 1e6 * cpu_s[0] / count,
            "uplink_cpu_us_per_frame_receivers": stats([1e6 * c / count for c in cpu_s[1:]]),
            "uplink_cpu_us_per_frame_all": 1e6 * sum(cpu_s) / count}


def _unicast_bystanders(eps: list[Endpoint], hosts: list[Host], count: int) -> dict:
    """Pings between hosts 0 and 1 (MACs learnt): what the other hosts' underlays received."""
    before = [link_counters(h.name, h.iface)[0] for h in hosts]
    run(["ip", "netns", "exec", eps[0].ns, "ping", "-q", "-c", str(count), "-i", "0.005", "-W", "1", eps[1].ip],
        check=False, timeout=60)
    time.sleep(0.2)
    got = [link_counters(h.name, h.iface)[0] - b for h, b in zip(hosts, before)]
    return {"pings": count, "underlay_rx_peer": got[1], "underlay_rx_bystanders": stats(got[2:])}


# --- driver -------------------------------------------------------------------------------------

def run_multihost(bin_dir: str, quick: bool, cleanup: Cleanup) -> dict:
    res: dict = {"quick": quick}
    log("multihost: two hosts (netns bh-a, bh-b over veth vxbA/vxbB), a supervisor in each")
    a, b = two_hosts(bin_dir, cleanup)
    res["supervisor_start_s"] = [a.start(), b.start()]
    res["mtu"] = run_mtu(a, b, 10)
    res["pairs"] = run_pairs(a, b, 1 if quick else 3, 3 if quick else 8, 10 if quick else 30)
    a.stop()
    b.stop()
    n = 8
    log(f"multihost: {n} hosts (netns bh-h0..bh-h{n - 1}) on the bridge vxbr0 (netns bh-u)")
    hosts = bridged_hosts(n, bin_dir, cleanup)
    res["fanout_supervisor_start_s"] = stats([h.start() for h in hosts])
    res["fanout"] = run_fanout(hosts, [2, 8] if quick else [2, 4, 8], 300 if quick else 1000)
    for h in hosts:
        h.stop()
    return res


def stale_cleanup() -> None:
    """What an interrupted earlier run of ours left: its netns (bh-*; the veths go with them)
    and uplinks (vde_plug of a bench run dir on our groups or underlay)."""
    for pid, (_, argv) in procfs.processes(("vde_plug",)).items():
        if any(a.startswith("vde:///tmp/vdeb-") for a in argv) and any(GROUP in a or UNDERLAY in a for a in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split(" ")[0]
        if name.startswith("bh-"):
            run(["ip", "netns", "del", name], check=False)


# --- report -------------------------------------------------------------------------------------

def _m(s: dict | None, digits: int = 0) -> str:
    if not s or not s.get("n"):
        return "–"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def tables(mh: dict) -> str:
    out = ["MTU: pings with DF (10 per size) from host A's tap at MTU 1500 to host B's; the underlay "
           "packets, IP fragments and reassembled datagrams counted on host B; the taps' MTU without the mtu option.", "",
           "| uplink | default MTU of the taps | unicast | IP bytes: underlay packets per frame (fragments, reassembled, replies) |",
           "|---|---|---|---|"]
    for scheme, m in mh.get("mtu", {}).items():
        cells = "; ".join(f"{r['ip_bytes']}: {r['underlay_packets_per_frame']:.1f} ({r.get('fragments', '?')}, "
                          f"{r['reassembled']}, "
                          f"{'–' if r['replies'] is None else r['replies']})" for r in m["sizes"])
        out.append(f"| `{m['url_a']}` | {m['default_mtu_taps'][0]} / {m['default_mtu_taps'][1]} | "
                   f"{'yes' if m['unicast_ok'] else 'NO (' + m['probe'] + ' probe)'} | {cells} |")
    p = mh.get("pairs")
    if p:
        out += ["", f"Two hosts, container to container ({p['reps']} interleaved rounds; iperf3 TCP {p['iperf_seconds']} s "
                f"each way; {p['pings']} pings at 0.2 s); CPU in % of one core during TCP:", "",
                "| path | tap MTU | TCP a→b Mbit/s | TCP b→a Mbit/s | ping avg RTT ms | ping min RTT ms | CPU uplinks (both) | "
                "CPU switches + plugs |",
                "|---|---|---|---|---|---|---|---|"]
        labels = {"one_switch": "one switch, no uplink (reference)", "vxvde": "vxvde:// between two hosts",
                  "udp": "udp:// between two hosts"}
        for k, label in labels.items():
            x = p["paths"].get(k)
            if not x:
                continue
            cpu = x["cpu_pct"]
            out.append(f"| {label} | {x['tap_mtu']} | {_m(x['tcp_fwd_mbit_s'])} | {_m(x['tcp_rev_mbit_s'])} | "
                       f"{_m(x['ping_avg_ms'], 3)} | {_m(x.get('ping_min_ms'), 3)} | {_m(cpu.get('uplinks'))} | "
                       f"{_m(cpu.get('switches'))} |")
        out.append("")
        for k, r in p["ratios"].items():
            out.append(f"- {k} / one switch: TCP a→b {_f(r['tcp_fwd_mbit_s'])}, b→a {_f(r['tcp_rev_mbit_s'])}, "
                       f"RTT avg {_f(r['ping_avg_ms'])}, min {_f(r.get('ping_min_ms'))}.")
        mem = p["uplink_memory_kb"]
        show = lambda ms: ", ".join(f"{m['pss']}/{m['rss']}/{m['private']}" for m in ms)  # noqa: E731
        out.append("- Memory of each uplink (`vde_plug`, host A, host B), PSS/RSS/private kB: " + "; ".join(
            f"{s}: idle {show(mem['idle'][s])}, after the load {show(mem['after_load'][s])}" for s in mem["idle"]) + ".")
        if p.get("hand_uplinks"):
            out.append("- The uplinks were started by hand (a build without the worker's uplink).")
    f = mh.get("fanout")
    if f:
        out += ["", "Many hosts on one vxvde network (one supervisor, switch, uplink and container per host; the "
                "hosts' veths on one Linux bridge without IGMP snooping); broadcast: pings to the subnet's broadcast "
                "address from host 0 (`ping -b`; the rate it reached is in the results), which the others do not answer "
                "(CPU: utime + stime of each uplink over the flood, divided by the frames sent):", "",
                "| hosts | setup (create + join on every host, s) | host 0 reaches all (s more) | uplink PSS kB | "
                "uplink CPU idle % | broadcast frames per receiver / sent (per s) | underlay packets: sender out, each host in | "
                "uplink CPU µs per broadcast frame: sender, each receiver, all hosts | unicast h0↔h1: underlay packets at the peer, at each bystander |",
                "|---|---|---|---|---|---|---|---|---|"]
        for k, x in f.items():
            bc, uni = x["broadcast"], x.get("unicast_bystanders")
            out.append(f"| {k} | {x['setup_s']:.2f} | {x['reach_all_from_host0_s']:.2f} | {_m(x['uplink_pss_kb'])} | "
                       f"{_m(x['uplink_idle_cpu_pct'], 1)} | {_m(bc['frames_per_receiver'])} / {bc['sent']} "
                       f"({_f(bc.get('rate_per_s'), 0)}) | "
                       f"{bc['underlay_tx_sender']}, {_m(bc['underlay_rx_per_host'])} | "
                       f"{_f(bc.get('uplink_cpu_us_per_frame_sender'), 1)}, "
                       f"{_m(bc.get('uplink_cpu_us_per_frame_receivers'), 1)}, {_f(bc.get('uplink_cpu_us_per_frame_all'), 1)} | "
                       + (f"{uni['underlay_rx_peer']}, {_m(uni['underlay_rx_bystanders'])} (of {uni['pings']} pings) |"
                          if uni else "– |"))
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", help="release binaries (vde-supervisor, vde-networker)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a results file (multihost key or a multihost run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results"))
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            r = json.load(f)
        print(tables(r.get("multihost", r)))
        return 0
    if not args.bin_dir:
        ap.error("--bin-dir is needed to measure")

    stale_cleanup()
    cleanup = Cleanup()
    try:
        res = run_multihost(os.path.abspath(args.bin_dir), args.quick, cleanup)
    finally:
        cleanup.run_all()
        stale_cleanup()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"multihost-{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_json(path, res)
    log(f"results: {path}")
    print(tables(res))
    return 0


if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
