"""Data plane, container to container: ping RTT and iperf3 TCP throughput in both directions
on four paths, measured interleaved (A B C D, B C D A, ...):

  vde        two containers on a `docker network create -d vde` network (the plugin)
  bridge     two containers on a Docker bridge network
  vde_hand   a vde_switch and two vde_plug2tap started by hand between two netns
  kernel     a Linux bridge and two veth pairs, all inside netns of our own

Every tool runs on the host inside the peer's netns (`nsenter --net=...`), so the same
iperf3 and ping binaries measure every path. Traffic stays between these namespaces."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from common import DOCKER, IMAGE, LABEL, Cleanup, log, run, stats, stop_process
from procfs import cpu_seconds, processes_under


@dataclass
class Path:
    name: str
    ns_a: str  # a path usable by nsenter --net=
    ns_b: str
    ip_a: str
    ip_b: str
    vde_pids: list[int] = field(default_factory=list)  # switch and plugs whose CPU time we count

    def ns(self, which: str) -> list[str]:
        return ["nsenter", f"--net={self.ns_a if which == 'a' else self.ns_b}"]


# --- building the four paths ----------------------------------------------------------------

def _docker_pair(kind: str, subnet_octet: int, cleanup: Cleanup, driver: list[str]) -> Path:
    net = f"vdeb-dp-{kind}"
    subnet = f"10.235.{subnet_octet}.0/24"
    run([DOCKER, "network", "create", *driver, "--subnet", subnet, "--label", LABEL, net])
    cleanup.push(f"network {net}", lambda: run([DOCKER, "network", "rm", net], check=False))
    pids, ips = [], []
    for idx, host in ((0, 10), (1, 11)):
        name = f"vdeb-dp-{kind}-{idx}"
        ip = f"10.235.{subnet_octet}.{host}"
        run([DOCKER, "run", "-d", "--name", name, "--label", LABEL, "--net", net, "--ip", ip, IMAGE, "sleep", "3600"])
        cleanup.push(f"container {name}", lambda n=name: run([DOCKER, "rm", "-f", n], check=False))
        pid = int(run([DOCKER, "inspect", "-f", "{{.State.Pid}}", name]).stdout.strip())
        pids.append(pid)
        ips.append(ip)
    return Path(kind, f"/proc/{pids[0]}/ns/net", f"/proc/{pids[1]}/ns/net", ips[0], ips[1])


def _netns(name: str, cleanup: Cleanup) -> str:
    run(["ip", "netns", "add", name])
    cleanup.push(f"netns {name}", lambda: run(["ip", "netns", "del", name], check=False))
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    return f"/run/netns/{name}"


def _hand_vde(cleanup: Cleanup, into: Path | None = None) -> Path:
    """What the plugin does for two containers, by hand: a switch, two persistent taps, a plug
    per tap started in the host netns, then each tap moved into its namespace.

    With `into` (the plugin's pair of containers) the taps go into those containers' netns as a
    second interface, so that both VDE paths cross the same namespaces: a container's netns
    holds Docker's iptables NAT rules for its embedded DNS (127.0.0.11), which switch on
    conntrack for every packet in it and cost VDE about 7 % of its TCP throughput on this
    machine, whatever the network driver. Without Docker, netns of our own."""
    work = tempfile.mkdtemp(prefix="vdeb-hand-", dir="/tmp")
    cleanup.push(f"dir {work}", lambda: run(["rm", "-rf", work], check=False))
    ctl, mgmt = os.path.join(work, "ctl"), os.path.join(work, "mgmt")
    # -n 33: the plugin's switch for the default num_switchports=32 (port 0 is not a client's).
    sw = subprocess.Popen(["vde_switch", "-s", ctl, "-M", mgmt, "-n", "33"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cleanup.push("hand vde_switch", lambda: (sw.stdin.close(), sw.wait(timeout=10)))
    for _ in range(500):
        if os.path.exists(os.path.join(ctl, "ctl")):
            break
        time.sleep(0.01)
    pids = [sw.pid]
    paths = []
    for side in ("a", "b"):
        tap = f"vdebhv{side}"
        if into is not None:
            target = into.ns_a if side == "a" else into.ns_b
            paths.append(target)
            ns_pid = target.split("/")[2]  # /proc/PID/ns/net
            in_ns = ["nsenter", f"--net={target}", "ip"]
        else:
            ns = f"vdeb-hv-{side}"
            paths.append(_netns(ns, cleanup))
            ns_pid = ns
            in_ns = ["ip", "-n", ns]
        run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        cleanup.push(f"tap {tap}", lambda t=tap: run(["ip", "link", "del", t], check=False))
        plug = subprocess.Popen(["vde_plug2tap", "-s", ctl, tap], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cleanup.push(f"plug {tap}", lambda p=plug: (p.send_signal(signal.SIGTERM), p.wait(timeout=10)))
        pids.append(plug.pid)
        time.sleep(0.2)  # the plug opens the tap and connects to the switch
        run(["ip", "link", "set", tap, "netns", ns_pid])
        cleanup.push(f"tap {tap} in {ns_pid}", lambda t=tap, cmd=in_ns: run(cmd + ["link", "del", t], check=False))
        ip = "10.235.3.10" if side == "a" else "10.235.3.11"
        run(in_ns + ["addr", "add", f"{ip}/24", "dev", tap])
        run(in_ns + ["link", "set", tap, "up"])
    return Path("vde_hand", paths[0], paths[1], "10.235.3.10", "10.235.3.11", vde_pids=pids)


def _kernel_bridge(cleanup: Cleanup) -> Path:
    """A Linux bridge in a netns of its own (no br_netfilter rules there), a veth to each peer."""
    _netns("vdeb-kb-h", cleanup)
    run(["ip", "-n", "vdeb-kb-h", "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", "vdeb-kb-h", "link", "set", "br0", "up"])
    paths = []
    for side, ip in (("a", "10.235.4.10"), ("b", "10.235.4.11")):
        ns = f"vdeb-kb-{side}"
        paths.append(_netns(ns, cleanup))
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"vk{side}", "netns", "vdeb-kb-h"])
        run(["ip", "-n", "vdeb-kb-h", "link", "set", f"vk{side}", "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    return Path("kernel", paths[0], paths[1], "10.235.4.10", "10.235.4.11")


# --- measuring --------------------------------------------------------------------------------

def _ping(p: Path, count: int) -> dict:
    run(p.ns("a") + ["ping", "-c", "3", "-i", "0.2", "-W", "2", p.ip_b], check=False)  # ARP, caches
    out = run(p.ns("a") + ["ping", "-c", str(count), "-i", "0.2", "-q", p.ip_b], timeout=count + 30).stdout
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    loss = re.search(r"([\d.]+)% packet loss", out)
    if not m:
        raise RuntimeError(f"ping on {p.name} gave no RTT: {out}")
    return {"min_ms": float(m.group(1)), "avg_ms": float(m.group(2)), "max_ms": float(m.group(3)),
            "mdev_ms": float(m.group(4)), "loss_pct": float(loss.group(1)) if loss else None}


def iperf_tcp(p: Path, seconds: int, reverse: bool, roles: dict[str, list[int]] | None = None) -> dict:
    """iperf3 TCP A -> B (B -> A with `reverse`): the receiver's Mbit/s, retransmits, and the CPU
    of each role meanwhile (% of one CPU; default one role, `vde`: the path's switch and plugs)."""
    roles = {"vde": p.vde_pids} if roles is None else roles
    server = subprocess.Popen(p.ns("b") + ["iperf3", "-s", "-1", "-B", p.ip_b], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        argv = p.ns("a") + ["iperf3", "-c", p.ip_b, "-t", str(seconds), "-J"] + (["-R"] if reverse else [])
        cpu0 = {role: {pid: cpu_seconds(pid) for pid in pids} for role, pids in roles.items()}
        t0 = time.perf_counter()
        for _ in range(50):  # the server needs a moment to listen
            r = run(argv, check=False, timeout=seconds + 60)
            if r.returncode == 0 and '"sum_received"' in r.stdout:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"iperf3 on {p.name} failed: {r.stdout[-500:]} {r.stderr[-500:]}")
        wall = time.perf_counter() - t0
        cpu = {role: 100 * sum(cpu_seconds(pid) - c0 for pid, c0 in pids.items()) / wall
               for role, pids in cpu0.items()}
        end = json.loads(r.stdout)["end"]
        return {"mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
                "retransmits": end.get("sum_sent", {}).get("retransmits"), "cpu_pct": cpu}
    finally:
        stop_process(server)


def _iperf(p: Path, seconds: int, reverse: bool) -> dict:
    """iperf3 TCP with the CPU of the path's switch and plugs (`vde_cpu_pct`; none for paths without)."""
    out = iperf_tcp(p, seconds, reverse)
    out["vde_cpu_pct"] = out.pop("cpu_pct")["vde"] if p.vde_pids else None
    return out


def run_dataplane(quick: bool, cleanup: Cleanup, vde_run_dir: str, with_docker: bool, reps: int | None = None,
                  seconds: int | None = None, pings: int | None = None) -> dict:
    """reps, seconds, pings: smaller runs for the links section's references (default: the data section's)."""
    reps = reps or (1 if quick else 4)
    seconds = seconds or (3 if quick else 8)
    pings = pings or (10 if quick else 30)
    paths: list[Path] = []
    if with_docker:
        log("data plane: two containers on a vde network")
        vde = _docker_pair("vde", 1, cleanup, ["-d", "vde"])
        vde.vde_pids = [pid for pid, (kind, _) in processes_under(vde_run_dir).items()
                        if kind in ("vde_switch", "vde_plug2tap")]
        if len(vde.vde_pids) < 3:
            raise RuntimeError("the vde network's switch and plugs are not ours: another supervisor answered dockerd "
                               "on /run/docker/plugins/vde.sock (someone not taking /run/vde-docker-plugin.lock)")
        paths.append(vde)
        log("data plane: two containers on a Docker bridge network")
        paths.append(_docker_pair("bridge", 2, cleanup, ["-d", "bridge"]))
    if with_docker:
        log("data plane: hand-started vde_switch + 2 x vde_plug2tap between the vde network's containers")
        paths.append(_hand_vde(cleanup, into=vde))
    else:
        log("data plane: hand-started vde_switch + 2 x vde_plug2tap between two netns")
        paths.append(_hand_vde(cleanup))
    log("data plane: Linux bridge + veth in netns")
    paths.append(_kernel_bridge(cleanup))

    samples = {p.name: {"ping": [], "tcp_fwd": [], "tcp_rev": []} for p in paths}
    for rep in range(reps):
        # The order turns by one each round (A B C D, B C D A, ...): no path always runs right
        # after the same neighbour (the bridges leave the CPUs hot and their caches cold).
        for p in paths[rep % len(paths):] + paths[:rep % len(paths)]:
            log(f"data plane: rep {rep + 1}/{reps}: {p.name}")
            samples[p.name]["ping"].append(_ping(p, pings))
            samples[p.name]["tcp_fwd"].append(_iperf(p, seconds, reverse=False))
            samples[p.name]["tcp_rev"].append(_iperf(p, seconds, reverse=True))
    summary = {}
    for name, s in samples.items():
        summary[name] = {
            "ping_avg_ms": stats([x["avg_ms"] for x in s["ping"]]),
            "tcp_fwd_mbit_s": stats([x["mbit_s"] for x in s["tcp_fwd"]]),
            "tcp_rev_mbit_s": stats([x["mbit_s"] for x in s["tcp_rev"]]),
            "samples": s,
        }
        cpus = [x["vde_cpu_pct"] for x in s["tcp_fwd"] + s["tcp_rev"] if x["vde_cpu_pct"] is not None]
        if cpus:
            summary[name]["vde_cpu_pct_during_tcp"] = stats(cpus)
    return {"reps": reps, "iperf_seconds": seconds, "pings": pings, "paths": summary}
