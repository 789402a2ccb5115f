"""Link impairment (issue 13): how exactly the links are shaped, and what shaping costs.

Accuracy: pairs of endpoints A and B on one network, with `link_*` settings on both or on A
only; configured vs measured one-way delay, jitter, loss, duplication and bandwidth, each
from traffic between the two (ping with per-reply RTTs, iperf3 TCP). Every frame of a round
trip crosses each impaired link twice (out of A to the switch, back in to A), so a round
trip A -> B -> A crosses k = 2 impaired link directions with A impaired, k = 4 with both:
one-way delay = (RTT - unimpaired RTT) / k, per-direction loss p from the ping loss L by
1 - (1 - p)^k = L.

Cost: throughput (iperf3 TCP both ways) and CPU of switch and plugs of an unimpaired pair
(a `vde_plug2tap` per endpoint, exactly as before issue 13) vs a pair whose plugs are
wirefilters with nothing to shape but a 10 Gbit/s ceiling (`link_rate=10gbit`: the cost of
the extra work alone), interleaved; CPU per plug at a fixed 100 Mbit/s; PSS
(/proc/PID/smaps_rollup) and CPU of each plug kind idle and under load. The references
(Docker bridge, Linux bridge, hand-started VDE) come from `dataplane.run_dataplane` in the
same run.

Two backends build the pairs:
- `PluginPairs`: through dockerd and the plugin (bench/run): `docker network create -o
  link_*` when both ends get the same settings, `docker network connect --driver-opt
  link_*` for one endpoint.
- `HandPairs`: by hand, no Docker: a vde_switch, a tap per netns, and per endpoint either a
  `vde_plug2tap` or the plugin's impaired plug, `wirefilter -v CTL:tap://NAME --daemon`
  started inside the endpoint's netns. `python3 bench/lib/links.py --hand` runs the whole
  section that way (to check the measurement against wirefilter itself)."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfs  # noqa: E402
from common import stop_like_ctrl_c, DOCKER, IMAGE, LABEL, Cleanup, log, run, stats, stop_process  # noqa: E402

PLUG_KINDS = ("vde_switch", "vde_plug2tap", "wirefilter")

# What docs/benchmarks.md recorded before issue 13 (run `20261129-050820`, commit `f708583`,
# full run, 4 rounds of 8 s): the vde network's data plane. latest.json of that time is gone
# (a later `--only idle` run replaced it), so the figures are copied here.
BEFORE = {"run": "20261129-050820", "tcp_fwd_mbit_s": 831.0, "tcp_rev_mbit_s": 800.0, "ping_avg_ms": 0.282,
          "vde_cpu_pct_during_tcp": 148.0, "hand_tcp_fwd_mbit_s": 871.0, "hand_tcp_rev_mbit_s": 896.0}

# Ethernet frame bytes per TCP payload byte at MTU 1500 with timestamps: 1514 / 1448.
TCP_FRAME_OVERHEAD = 1514 / 1448


@dataclass
class Side:
    ns: str  # a path for nsenter --net=
    ip: str
    tap: str = ""
    link: dict = field(default_factory=dict)  # {"delay": "25ms", ...}: the CLI keys of LinkImpairment

    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net={self.ns}"]


@dataclass
class Pair:
    name: str
    a: Side
    b: Side
    marker: str  # a string in the argv of this pair's switch and plugs
    undo: Cleanup = field(default_factory=Cleanup)
    net: str = ""  # the Docker network and A's container (plugin backend)
    ctr_a: str = ""

    def processes(self) -> dict[int, tuple[str, str]]:
        """pid -> (role, kind): role is `switch`, `a` or `b` (the plug of that endpoint). The
        switch is the one whose ctl dir the plugs name (a plugin run dir holds many networks)."""
        out = {}
        procs = {pid: v for pid, v in procfs.processes(PLUG_KINDS).items() if any(self.marker in x for x in v[1])}
        ctl_dirs = set()
        for pid, (kind, argv) in procs.items():
            if kind == "vde_switch":
                continue
            joined = " ".join(argv)
            for role, side in (("a", self.a), ("b", self.b)):
                if side.tap and (joined.endswith(" " + side.tap) or f"tap://{side.tap}" in joined):
                    out[pid] = (role, kind)
                    if kind == "vde_plug2tap" and "-s" in argv:
                        ctl_dirs.add(argv[argv.index("-s") + 1])
                    elif kind == "wirefilter" and "-v" in argv:
                        ctl_dirs.add(argv[argv.index("-v") + 1].split(":tap://")[0])
        for pid, (kind, argv) in procs.items():
            if kind == "vde_switch" and ctl_dirs & set(argv):
                out[pid] = ("switch", kind)
        self.ctl_dirs = ctl_dirs
        return out

    def every_process(self) -> list[str]:
        """The executables of every process whose argv names this pair's switch (any program,
        not just the known kinds): what the pair's data path costs in processes."""
        self.processes()
        found = []
        for pid in procfs.all_pids():
            argv = procfs.cmdline(pid)
            if argv and procfs.alive(pid) and any(d in a for a in argv for d in self.ctl_dirs):
                found.append(os.path.basename(argv[0]))
        return sorted(found)


def _link_argv(link: dict) -> list[str]:
    """The wirefilter options for a link, as the plugin's worker passes them (units: ms, %,
    bytes/s). Used by the hand backend only."""
    argv = []
    if "delay" in link:
        d = _ms(link["delay"])
        j = _ms(link.get("jitter", "0ms"))
        argv += ["-d", f"{d:g}+{j:g}" if j else f"{d:g}"]
    if "loss" in link:
        argv += ["-l", link["loss"].rstrip("%")]
    if "loss_burst" in link:
        argv += ["-L", link["loss_burst"]]
    if "dup" in link:
        argv += ["-D", link["dup"].rstrip("%")]
    if "rate" in link:
        argv += ["-b", str(_bits(link["rate"]) // 8)]
    return argv


def _ms(v: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def _bits(v: str) -> int:
    m = re.fullmatch(r"([\d.]+)(bit|kbit|mbit|gbit)", v.lower())
    return int(float(m.group(1)) * {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[m.group(2)])


def _pct(v: str) -> float:
    return float(v.rstrip("%"))


# --- backends -------------------------------------------------------------------------------

class HandPairs:
    """Pairs built by hand in netns of our own: what the plugin does, without it."""

    def __init__(self, cleanup: Cleanup):
        self.cleanup = cleanup
        self.count = 0

    def make(self, name: str, link_a: dict, link_b: dict) -> Pair:
        self.count += 1
        i = self.count
        undo = Cleanup()
        self.cleanup.push(f"pair {name}", undo.run_all)
        work = tempfile.mkdtemp(prefix="vdeb-lk-", dir="/tmp")
        undo.push(f"dir {work}", lambda: run(["rm", "-rf", work], check=False))
        ctl = os.path.join(work, "ctl")
        sw = subprocess.Popen(["vde_switch", "-s", ctl, "-M", os.path.join(work, "mgmt"), "-n", "33"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        undo.push("switch", lambda: (sw.stdin.close(), sw.wait(timeout=10)))
        _wait(lambda: os.path.exists(os.path.join(ctl, "ctl")), 5, "vde_switch ctl")
        sides = []
        for side, link in (("a", link_a), ("b", link_b)):
            ns = f"vdeb-lk{i}{side}"
            run(["ip", "netns", "add", ns])
            undo.push(f"netns {ns}", lambda n=ns: run(["ip", "netns", "del", n], check=False))
            tap = f"vdeblk{i}{side}"
            ip = f"10.239.{i % 250}.{10 if side == 'a' else 11}"
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"])
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", tap])
            run(["ip", "-n", ns, "link", "set", tap, "up"])
            s = Side(f"/run/netns/{ns}", ip, tap, dict(link))
            if link:
                pidfile = os.path.join(work, f"wf-{side}.pid")
                run(s.nsenter() + ["wirefilter", "-v", f"{ctl}:tap://{tap}", "-M", os.path.join(work, f"wf-{side}.mgmt"),
                                   "--daemon", "--pidfile", pidfile] + _link_argv(link))
                _wait(lambda p=pidfile: os.path.exists(p) and open(p).read().strip().isdigit(), 5, "wirefilter pid file")
                pid = int(open(pidfile).read().strip())
                undo.push(f"wirefilter {tap}", lambda p=pid: _kill(p))
            else:
                plug = subprocess.Popen(s.nsenter() + ["vde_plug2tap", "-s", ctl, tap], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                undo.push(f"plug {tap}", lambda p=plug: (p.send_signal(signal.SIGTERM), p.wait(timeout=10)))
            sides.append(s)
        pair = Pair(name, sides[0], sides[1], work, undo)
        _wait(lambda: len([r for r, _ in pair.processes().values() if r in ("a", "b")]) == 2, 5, "plugs")
        return pair

    def close(self, pair: Pair) -> None:
        pair.undo.run_all()


class PluginPairs:
    """Pairs of containers on vde networks made through dockerd (the real plugin)."""

    def __init__(self, cleanup: Cleanup, sup):
        self.cleanup = cleanup
        self.sup = sup  # common.Supervisor
        self.run_dir = sup.run_dir
        self.count = 0

    def make(self, name: str, link_a: dict, link_b: dict) -> Pair:
        self.count += 1
        i = self.count
        undo = Cleanup()
        self.cleanup.push(f"pair {name}", undo.run_all)
        net = f"vdeb-lk-{i}"
        subnet = f"10.239.{i % 250}.0/24"
        shared = link_a if link_a == link_b else {}
        opts = [x for k, v in shared.items() for x in ("-o", f"link_{k}={v}")]
        run([DOCKER, "network", "create", "-d", "vde", "--subnet", subnet, "--label", LABEL, *opts, net])
        undo.push(f"network {net}", lambda: run([DOCKER, "network", "rm", net], check=False))
        sides = []
        for side, link in (("a", link_a), ("b", link_b)):
            ctr = f"vdeb-lk-{i}-{side}"
            ip = f"10.239.{i % 250}.{10 if side == 'a' else 11}"
            own = {} if shared else link
            if own:
                # --driver-opt goes with `docker network connect` only: create, reconnect with it, start.
                run([DOCKER, "create", "--name", ctr, "--label", LABEL, "--net", net, IMAGE, "sleep", "3600"])
                undo.push(f"container {ctr}", lambda c=ctr: run([DOCKER, "rm", "-f", c], check=False))
                run([DOCKER, "network", "disconnect", net, ctr])
                dopts = [x for k, v in own.items() for x in ("--driver-opt", f"link_{k}={v}")]
                run([DOCKER, "network", "connect", "--ip", ip, *dopts, net, ctr])
                run([DOCKER, "start", ctr])
            else:
                run([DOCKER, "run", "-d", "--name", ctr, "--label", LABEL, "--net", net, "--ip", ip, IMAGE, "sleep", "3600"])
                undo.push(f"container {ctr}", lambda c=ctr: run([DOCKER, "rm", "-f", c], check=False))
            pid = int(run([DOCKER, "inspect", "-f", "{{.State.Pid}}", ctr]).stdout.strip())
            eid = run([DOCKER, "inspect", "-f", "{{(index .NetworkSettings.Networks \"" + net + "\").EndpointID}}",
                       ctr]).stdout.strip()
            sides.append(Side(f"/proc/{pid}/ns/net", ip, "vde" + eid[:12], dict(link)))
        pair = Pair(name, sides[0], sides[1], self.run_dir, undo, net=net, ctr_a=f"vdeb-lk-{i}-a")
        _wait(lambda: len([r for r, _ in pair.processes().values() if r in ("a", "b")]) == 2, 10, "plugs")
        kinds = {r: k for r, k in pair.processes().values()}
        for role, side in (("a", pair.a), ("b", pair.b)):
            want = "wirefilter" if side.link else "vde_plug2tap"
            if kinds.get(role) != want:
                raise RuntimeError(f"{name}: endpoint {role} ({side.link or 'unimpaired'}) is plugged by "
                                   f"{kinds.get(role)}, not {want}")
        return pair

    def close(self, pair: Pair) -> None:
        pair.undo.run_all()

    def link_cli(self, pair: Pair, args: list[str]) -> str:
        """`vde-supervisor link NET CONTAINER-A ARGS...` against our supervisor; its output."""
        argv = [os.path.join(self.sup.bin_dir, "vde-supervisor"), "link", "--control-socket", self.sup.control,
                pair.net, pair.ctr_a, *args]
        return run(argv, timeout=30).stdout


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    _wait(lambda: not procfs.alive(pid), 10, f"pid {pid} to exit")


# --- measuring --------------------------------------------------------------------------------

def ping(p: Pair, count: int, interval: float, warm: bool = True) -> dict:
    """`count` pings A -> B: per-reply RTTs by sequence number, losses, duplicates."""
    if warm:
        run(p.a.nsenter() + ["ping", "-c", "3", "-i", "0.05", "-W", "2", p.b.ip], check=False)  # ARP
    # No deadline (-w): on a loaded machine ping sends late, and a deadline would cut the last
    # ones off and count them as lost. -W 2: how long it waits for the last replies.
    out = run(p.a.nsenter() + ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", p.b.ip],
              check=False, timeout=count * interval * 4 + 60).stdout
    sent = re.search(r"(\d+) packets transmitted", out)
    if sent:
        count = int(sent.group(1))
    rtt: dict[int, float] = {}
    dups = 0
    for line in out.splitlines():
        m = re.search(r"icmp_seq=(\d+) .*time=([\d.]+) ms", line)
        if not m:
            continue
        if "DUP!" in line:
            dups += 1
            continue
        rtt[int(m.group(1))] = float(m.group(2))
    seqs = range(1, count + 1)
    lost = [s for s in seqs if s not in rtt]
    bursts, run_len = [], 0
    for s in seqs:
        if s in rtt:
            if run_len:
                bursts.append(run_len)
            run_len = 0
        else:
            run_len += 1
    if run_len:
        bursts.append(run_len)
    values = [rtt[s] for s in sorted(rtt)]
    return {"sent": count, "received": len(values), "lost": len(lost), "dups": dups, "rtts_ms": values,
            "loss_bursts": bursts}


def _sd(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of a proportion k/n (Wilson score)."""
    if n == 0:
        return (0.0, 1.0)
    ph = k / n
    d = 1 + z * z / n
    c = (ph + z * z / (2 * n)) / d
    h = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def iperf(p: Pair, seconds: float, reverse: bool = False, rate: str | None = None, udp: bool = False,
          sample_pss: bool = False) -> dict:
    """iperf3 A -> B (B -> A with reverse), receiver's Mbit/s; CPU of each of the pair's
    processes over the test (% of one CPU), and with sample_pss their largest PSS meanwhile."""
    server = subprocess.Popen(p.b.nsenter() + ["iperf3", "-s", "-1", "-B", p.b.ip], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    procs = p.processes()
    peak: dict[int, int] = {pid: 0 for pid in procs}
    stop = threading.Event()

    def sampler():
        while not stop.wait(0.25):
            for pid in procs:
                peak[pid] = max(peak[pid], procfs.smaps_rollup(pid).get("Pss", 0))
    try:
        argv = p.a.nsenter() + ["iperf3", "-c", p.b.ip, "-t", str(seconds), "-J"]
        argv += (["-R"] if reverse else []) + (["-b", rate] if rate else []) + (["-u"] if udp else [])
        th = threading.Thread(target=sampler, daemon=True) if sample_pss else None
        for _ in range(50):  # the server needs a moment to listen
            cpu0 = {pid: procfs.cpu_seconds(pid) for pid in procs}
            t0 = time.perf_counter()
            if th and not th.is_alive():
                th.start()
            r = run(argv, check=False, timeout=seconds + 60)
            if r.returncode == 0 and ('"sum"' if udp else '"sum_received"') in r.stdout:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"iperf3 on {p.name} failed: {r.stdout[-500:]} {r.stderr[-500:]}")
        wall = time.perf_counter() - t0
        stop.set()
        if th:
            th.join()
        cpu = {pid: 100 * (procfs.cpu_seconds(pid) - cpu0[pid]) / wall for pid in procs}
        end = json.loads(r.stdout)["end"]
        out = {"mbit_s": (end["sum"] if udp else end["sum_received"])["bits_per_second"] / 1e6,
               "retransmits": end.get("sum_sent", {}).get("retransmits"),
               "cpu_pct": {f"{procs[pid][0]}:{procs[pid][1]}": cpu[pid] for pid in procs}}
        if sample_pss:
            out["peak_pss_kb"] = {f"{procs[pid][0]}:{procs[pid][1]}": peak[pid] for pid in procs}
        return out
    finally:
        stop.set()
        stop_process(server)


def idle_cost(p: Pair, seconds: float) -> dict:
    """CPU (% of one CPU), wakeups per second and PSS of each of the pair's processes, nothing flowing."""
    procs = p.processes()
    c0 = {pid: (procfs.cpu_seconds(pid), procfs.context_switches(pid)) for pid in procs}
    t0 = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    out = {}
    for pid, (role, kind) in procs.items():
        r = procfs.smaps_rollup(pid)
        out[f"{role}:{kind}"] = {"cpu_pct": 100 * (procfs.cpu_seconds(pid) - c0[pid][0]) / wall,
                                 "wakeups_per_s": (procfs.context_switches(pid) - c0[pid][1]) / wall,
                                 "pss_kb": r.get("Pss", 0), "rss_kb": r.get("Rss", 0),
                                 "private_kb": r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)}
    return out


# --- the section ------------------------------------------------------------------------------

def _k(link_a: dict, link_b: dict, key: str) -> int:
    """Impaired link directions a round trip A -> B -> A crosses for `key`."""
    return 2 * ((key in link_a) + (key in link_b))


def accuracy(backend, quick: bool) -> list[dict]:
    rows: list[dict] = []
    scale = 0.5 if quick else 1.0
    n = lambda x: max(20, int(x * scale))  # noqa: E731

    def case(label: str, a: dict, b: dict, measure) -> None:
        """One pair, one measurement: a row, or an error row (the other cases still run)."""
        log(f"links: accuracy: {label}")
        p = None
        try:
            p = backend.make(label, a, b)
            rows.append(measure(p))
        except Exception as e:  # noqa: BLE001
            log(f"links: accuracy: {label} FAILED: {e}")
            rows.append({"what": "error", "config": label, "error": str(e)[:500]})
        finally:
            if p is not None:
                backend.close(p)

    # The unimpaired round trip, subtracted from the delayed ones.
    def base(p):
        r = ping(p, n(100), 0.02)
        return {"what": "base", "config": "none", "rtt_mean_ms": sum(r["rtts_ms"]) / len(r["rtts_ms"]),
                "rtt_sd_ms": _sd(r["rtts_ms"]), "pings": r["sent"], "lost": r["lost"]}
    case("unimpaired", {}, {}, base)
    if rows[-1]["what"] != "base":
        return rows
    base_mean = rows[-1]["rtt_mean_ms"]

    def delay(label, a, b, count, interval):
        def measure(p):
            r = ping(p, count, interval)
            k = _k(a, b, "delay")
            rtts = r["rtts_ms"]
            mean = sum(rtts) / len(rtts)
            row = {"what": "delay", "config": label, "k": k, "delay_ms": _ms(a["delay"]), "pings": r["sent"],
                   "rtt_mean_ms": mean, "rtt_min_ms": min(rtts), "rtt_max_ms": max(rtts), "rtt_sd_ms": _sd(rtts),
                   "one_way_ms": (mean - base_mean) / k, "lost": r["lost"]}
            if "jitter" in a:
                j = _ms(a["jitter"])
                # Each crossing adds an independent uniform delay in [d - j, d + j]: sd j / sqrt(3).
                row |= {"what": "jitter", "jitter_ms": j, "expected_rtt_sd_ms": j * math.sqrt(k / 3),
                        "jitter_measured_ms": _sd(rtts) * math.sqrt(3 / k),
                        "expected_rtt_range_ms": [base_mean + k * (row["delay_ms"] - j),
                                                  base_mean + k * (row["delay_ms"] + j)]}
            return row
        return measure

    for label, a, b, count, interval in (
            ("delay 25ms on both", {"delay": "25ms"}, {"delay": "25ms"}, n(50), 0.05),
            ("delay 50ms on A", {"delay": "50ms"}, {}, n(50), 0.05),
            ("delay 1ms on A", {"delay": "1ms"}, {}, n(100), 0.02),
            ("delay 50ms jitter 10ms on A", {"delay": "50ms", "jitter": "10ms"}, {}, n(400), 0.03),
            ("delay 20ms jitter 5ms on both", {"delay": "20ms", "jitter": "5ms"}, {"delay": "20ms", "jitter": "5ms"},
             n(400), 0.03)):
        case(label, a, b, delay(label, a, b, count, interval))

    def loss_or_dup(label, a, count, interval):
        def measure(p):
            r = ping(p, count, interval)
            key = "dup" if "dup" in a else "loss"
            k = _k(a, {}, key)
            conf = _pct(a[key]) / 100
            if key == "loss":
                lo, hi = wilson(r["lost"], r["sent"])
                per = lambda x: 1 - (1 - x) ** (1 / k)  # noqa: E731
                return {"what": "loss", "config": label, "k": k, "configured_pct": 100 * conf, "pings": r["sent"],
                        "lost": r["lost"], "ping_loss_pct": 100 * r["lost"] / r["sent"],
                        "expected_ping_loss_pct": 100 * (1 - (1 - conf) ** k),
                        "measured_pct": 100 * per(r["lost"] / r["sent"]), "ci95_pct": [100 * per(lo), 100 * per(hi)],
                        "burst": int(a.get("loss_burst", 0)) or None,
                        "mean_lost_run": (sum(r["loss_bursts"]) / len(r["loss_bursts"])) if r["loss_bursts"] else 0}
            # A duplicate of the request makes a second reply too; small p: dups per ping ~ k p.
            lo, hi = wilson(r["dups"], r["received"])
            return {"what": "dup", "config": label, "k": k, "configured_pct": 100 * conf, "pings": r["sent"],
                    "dups": r["dups"], "measured_pct": 100 * r["dups"] / r["received"] / k,
                    "ci95_pct": [100 * lo / k, 100 * hi / k]}
        return measure

    for label, a, count, interval in (
            ("loss 1% on A", {"loss": "1%"}, n(2000), 0.005),
            ("loss 20% on A", {"loss": "20%"}, n(1000), 0.005),
            ("loss 10% burst 3 on A", {"loss": "10%", "loss_burst": "3"}, n(2000), 0.005),
            ("dup 5% on A", {"dup": "5%"}, n(1000), 0.005)):
        case(label, a, {}, loss_or_dup(label, a, count, interval))

    secs = 3 if quick else 5

    def rate_case(label, rate):
        def measure(p):
            t = secs + (3 if rate == "1mbit" else 0)
            fwd = iperf(p, t)
            rev = iperf(p, t, reverse=True)
            bits = _bits(rate)
            return {"what": "rate", "config": label, "configured_mbit_s": bits / 1e6,
                    "expected_goodput_mbit_s": bits / 1e6 / TCP_FRAME_OVERHEAD,
                    "tcp_fwd_mbit_s": fwd["mbit_s"], "tcp_rev_mbit_s": rev["mbit_s"],
                    "retransmits": [fwd["retransmits"], rev["retransmits"]]}
        return measure

    for rate in ("1mbit", "10mbit", "100mbit"):
        label = f"rate {rate} on A"
        case(label, {"rate": rate}, {}, rate_case(label, rate))
    return rows


def cost(backend, quick: bool) -> dict:
    """Unimpaired vs wirefilter plugs: throughput and CPU (interleaved), fixed-rate CPU, idle and
    loaded PSS and CPU."""
    reps = 1 if quick else 3
    secs = 3 if quick else 5
    out: dict = {"reps": reps, "iperf_seconds": secs}
    pairs = {"plug2tap": backend.make("cost unimpaired", {}, {}),
             "wirefilter": backend.make("cost wirefilter (rate 10gbit)", {"rate": "10gbit"}, {"rate": "10gbit"})}
    for p in pairs.values():
        ping(p, 5, 0.05)
    out["processes"] = {name: p.every_process() for name, p in pairs.items()}
    samples: dict = {k: {"fwd": [], "rev": [], "fixed100": []} for k in pairs}
    idle_s = 5 if quick else 10
    out["idle"] = {}
    for name, p in pairs.items():
        log(f"links: cost: idle {idle_s:.0f} s, {name}")
        out["idle"][name] = idle_cost(p, idle_s)
    for rep in range(reps):
        order = list(pairs) if rep % 2 == 0 else list(pairs)[::-1]
        for name in order:
            p = pairs[name]
            log(f"links: cost: rep {rep + 1}/{reps}: {name}")
            samples[name]["fwd"].append(iperf(p, secs, sample_pss=(rep == 0)))
            samples[name]["rev"].append(iperf(p, secs, reverse=True))
            samples[name]["fixed100"].append(iperf(p, secs, rate="100M"))
    out["samples"] = samples
    summary = {}
    for name, s in samples.items():
        roles = sorted(s["fwd"][0]["cpu_pct"])
        summary[name] = {
            "tcp_fwd_mbit_s": stats([x["mbit_s"] for x in s["fwd"]]),
            "tcp_rev_mbit_s": stats([x["mbit_s"] for x in s["rev"]]),
            "fixed100_mbit_s": stats([x["mbit_s"] for x in s["fixed100"]]),
            "cpu_pct_max_tcp": {r: stats([x["cpu_pct"].get(r, 0) for x in s["fwd"] + s["rev"]]) for r in roles},
            "cpu_pct_fixed100": {r: stats([x["cpu_pct"].get(r, 0) for x in s["fixed100"]]) for r in roles},
            "peak_pss_kb_max_tcp": s["fwd"][0].get("peak_pss_kb"),
        }
    out["summary"] = summary
    for p in pairs.values():
        backend.close(p)

    # A wirefilter that queues: 50 ms delay and 10 Mbit/s on A, TCP through it.
    log("links: cost: wirefilter with a queue (delay 50ms, rate 10mbit on A)")
    p = backend.make("cost queueing wirefilter", {"delay": "50ms", "rate": "10mbit"}, {})
    ping(p, 3, 0.1)
    idle_before = idle_cost(p, idle_s)
    loaded = iperf(p, secs + 3, sample_pss=True)
    time.sleep(1)
    idle_after = idle_cost(p, idle_s)
    backend.close(p)
    out["queueing"] = {"idle_before": idle_before, "load": loaded, "idle_after": idle_after}
    return out


def _ping_timeline(p: Pair, interval: float, seconds: float, action) -> dict:
    """Pings A -> B every `interval` for `seconds`, runs `action()` after a second, and
    returns per-sequence send times (relative to the action's start) and RTTs (None: lost)."""
    count = int(seconds / interval)
    # A deadline (-w), not a count: with the cable pulled no reply comes and ping would wait on.
    proc = subprocess.Popen(p.a.nsenter() + ["ping", "-n", "-D", "-i", str(interval), "-w", str(math.ceil(seconds)),
                                             p.b.ip], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = time.time()
    time.sleep(1.0)
    t0 = time.time()
    result = action()
    t1 = time.time()
    out, _ = proc.communicate(timeout=seconds + 30)
    sent = re.search(r"(\d+) packets transmitted", out)
    if sent:
        count = int(sent.group(1))
    rtt: dict[int, tuple[float, float]] = {}
    for line in out.splitlines():
        m = re.search(r"^\[([\d.]+)\].*icmp_seq=(\d+) .*time=([\d.]+) ms", line)
        if m and "DUP!" not in line:
            recv, seq, ms = float(m.group(1)), int(m.group(2)), float(m.group(3))
            rtt[seq] = (recv - ms / 1000 - t0, ms)
    # Sends of lost pings: interpolated from the neighbours' send times.
    sends = {seq: v[0] for seq, v in rtt.items()}
    timeline = []
    for seq in range(1, count + 1):
        if seq in sends:
            timeline.append((sends[seq], rtt[seq][1]))
        else:
            known = [q for q in sends if abs(q - seq) < 200]
            if known:
                q = min(known, key=lambda x: abs(x - seq))
                timeline.append((sends[q] + (seq - q) * interval, None))
            else:
                timeline.append((started - t0 + (seq - 1) * interval, None))
    return {"action_s": t1 - t0, "result": result, "timeline": timeline}


def _summarise_change(tl: dict, new_ok) -> dict:
    """Lost pings after the action started, and when the first reply that shows the new
    setting was sent (relative to the action's start)."""
    # Pings sent in the last 0.5 s may still be on their way when ping's deadline ends it.
    end = max(t for t, _ in tl["timeline"]) - 0.5
    after = [(t, r) for t, r in tl["timeline"] if 0 <= t <= end]
    lost = [t for t, r in after if r is None]
    first_new = next((t for t, r in after if r is not None and new_ok(r)), None)
    return {"cli_s": tl["action_s"], "lost_after": len(lost),
            "lost_span_s": (max(lost) - min(lost)) if lost else 0.0,
            "first_new_reply_sent_s": first_new}


def live(backend, quick: bool) -> list[dict]:
    """Live changes through `vde-supervisor link` (the plugin backend only): how long until a
    ping shows them, and what a change costs in lost pings (10 ms pings)."""
    if not hasattr(backend, "link_cli"):
        return []
    rows = []
    p = backend.make("live", {}, {})
    ping(p, 5, 0.05)
    interval = 0.01
    steps = (
        ("unimpaired → delay 20ms (plug replaced by a wirefilter)", ["set", "delay=20ms"], lambda r: r > 30),
        ("delay 20ms → 50ms (management command)", ["set", "delay=50ms"], lambda r: r > 90),
        ("delay 50ms → cleared (wirefilter replaced by vde_plug2tap)", ["clear"], lambda r: r < 10),
        ("down (cable pulled)", ["down"], None),
        ("up", ["up"], lambda r: r < 10),
    )
    for label, args, new_ok in steps:
        log(f"links: live: {label}")
        try:
            tl = _ping_timeline(p, interval, 3.0, lambda a=args: backend.link_cli(p, a))
        except Exception as e:  # noqa: BLE001 - the next steps may still work
            log(f"links: live: {label} FAILED: {e}")
            rows.append({"change": label, "error": str(e)[:300]})
            continue
        if new_ok is None:
            after = [(t, r) for t, r in tl["timeline"] if t >= 0]
            first_lost = next((t for t, r in after if r is None), None)
            rows.append({"change": label, "cli_s": tl["action_s"], "first_lost_sent_s": first_lost,
                         "replies_after": sum(1 for _, r in after if r is not None)})
        else:
            rows.append({"change": label} | _summarise_change(tl, new_ok))
    backend.close(p)
    return rows


def run_links(backend, quick: bool) -> dict:
    t0 = time.perf_counter()
    res = {"accuracy": accuracy(backend, quick)}
    try:
        res["live"] = live(backend, quick)
    except Exception as e:  # noqa: BLE001 - the rest of the section still counts
        log(f"links: live changes failed: {e}")
        res["live_error"] = str(e)
    try:
        res["cost"] = cost(backend, quick)
    except Exception as e:  # noqa: BLE001 - keep the accuracy figures
        log(f"links: cost FAILED: {e}")
        res["cost_error"] = str(e)[:500]
    res["before"] = BEFORE
    res["seconds"] = time.perf_counter() - t0
    return res


# --- report ---------------------------------------------------------------------------------

def _f(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"


def _m(s: dict, d=0) -> str:
    if not s or not s.get("n"):
        return "–"
    if s["n"] == 1:
        return f"{s['median']:.{d}f}"
    return f"{s['median']:.{d}f} ({s['min']:.{d}f}–{s['max']:.{d}f})"


def tables(res: dict, dataplane: dict | None = None) -> str:
    out: list[str] = []
    acc = res["accuracy"]
    errors = [r for r in acc if r["what"] == "error"]
    if errors:
        out += ["Failed cases: " + "; ".join(f"{r['config']}: {r['error'][:160]}" for r in errors), ""]
    base = next((r for r in acc if r["what"] == "base"), None)
    if base is None:
        return "\n".join(out)
    out += [f"Unimpaired round trip A → B → A: {base['rtt_mean_ms']:.3f} ms mean (sd {base['rtt_sd_ms']:.3f}, "
            f"{base['pings']} pings), subtracted from the delayed ones. k = impaired link directions a round trip "
            "crosses (2 with A impaired, 4 with both).", ""]
    out += ["| configured | k | pings | RTT mean (min–max) ms | measured one-way delay ms | RTT sd ms (expected) | jitter measured ms |",
            "|---|---|---|---|---|---|---|"]
    for r in acc:
        if r["what"] in ("delay", "jitter"):
            jit = (f"{r['rtt_sd_ms']:.2f} ({r['expected_rtt_sd_ms']:.2f})" if r["what"] == "jitter" else f"{r['rtt_sd_ms']:.2f}")
            out.append(f"| {r['config']} | {r['k']} | {r['pings']} | {r['rtt_mean_ms']:.2f} ({r['rtt_min_ms']:.2f}–"
                       f"{r['rtt_max_ms']:.2f}) | **{r['one_way_ms']:.2f}** | {jit} | "
                       f"{_f(r.get('jitter_measured_ms')) if r['what'] == 'jitter' else '–'} |")
    out += ["", "| configured | k | pings | lost (ping loss %) | expected ping loss % | measured per direction % (95 % CI) | mean run of lost pings |",
            "|---|---|---|---|---|---|---|"]
    for r in acc:
        if r["what"] == "loss":
            out.append(f"| {r['config']} | {r['k']} | {r['pings']} | {r['lost']} ({r['ping_loss_pct']:.2f}) | "
                       f"{r['expected_ping_loss_pct']:.2f} | **{r['measured_pct']:.2f}** ({r['ci95_pct'][0]:.2f}–"
                       f"{r['ci95_pct'][1]:.2f}) | {r['mean_lost_run']:.2f} |")
        if r["what"] == "dup":
            out.append(f"| {r['config']} | {r['k']} | {r['pings']} | {r['dups']} duplicates | – | "
                       f"**{r['measured_pct']:.2f}** ({r['ci95_pct'][0]:.2f}–{r['ci95_pct'][1]:.2f}) | – |")
    out += ["", "| configured | expected TCP goodput Mbit/s (rate × 1448/1514) | iperf3 A→B Mbit/s | ratio | iperf3 B→A Mbit/s | ratio |",
            "|---|---|---|---|---|---|"]
    for r in acc:
        if r["what"] == "rate":
            e = r["expected_goodput_mbit_s"]
            out.append(f"| {r['config']} | {e:.2f} | {r['tcp_fwd_mbit_s']:.2f} | {r['tcp_fwd_mbit_s'] / e:.3f} | "
                       f"{r['tcp_rev_mbit_s']:.2f} | {r['tcp_rev_mbit_s'] / e:.3f} |")
    if res.get("live"):
        out += ["", "Live changes of A's link with `vde-supervisor link NET A ...` while A pings B every 10 ms "
                "(times from the CLI's start; the CLI resolves names through dockerd first):", "",
                "| change | CLI s | pings lost | first reply showing the change, sent after s |", "|---|---|---|---|"]
        for r in res["live"]:
            if "error" in r:
                out.append(f"| {r['change']} | failed: {r['error'][:120]} | | |")
            elif "first_lost_sent_s" in r:
                out.append(f"| {r['change']} | {r['cli_s']:.3f} | all from {_f(r['first_lost_sent_s'], 3)} s on "
                           f"({r['replies_after']} replies after) | – |")
            else:
                out.append(f"| {r['change']} | {r['cli_s']:.3f} | {r['lost_after']} | {_f(r['first_new_reply_sent_s'], 3)} |")
    if res.get("live_error"):
        out += ["", f"Live changes: failed ({res['live_error'][:200]})."]
    if dataplane:
        out += ["", _unimpaired_table(dataplane)]
    if res.get("cost_error"):
        out += ["", f"Cost: failed ({res['cost_error'][:200]})."]
    if "cost" not in res:
        return "\n".join(out)
    c = res["cost"]
    s = c["summary"]
    out += ["", f"Cost ({c['reps']} interleaved rounds, iperf3 TCP {c['iperf_seconds']} s each way; CPU in % of one CPU):", ""]
    out += ["| plugs of both endpoints | TCP A→B Mbit/s | TCP B→A Mbit/s | CPU switch / plug A / plug B at full TCP | at 100 Mbit/s (`-b 100M`) |",
            "|---|---|---|---|---|"]
    for name, label in (("plug2tap", "vde_plug2tap (unimpaired)"), ("wirefilter", "wirefilter, `link_rate=10gbit`")):
        x = s[name]
        full = " / ".join(_f(_cpu(x["cpu_pct_max_tcp"], r), 0) for r in ("switch", "a", "b"))
        fixed = " / ".join(_f(_cpu(x["cpu_pct_fixed100"], r), 1) for r in ("switch", "a", "b"))
        out.append(f"| {label} | {_m(x['tcp_fwd_mbit_s'])} | {_m(x['tcp_rev_mbit_s'])} | {full} | {fixed} |")
    if c.get("processes"):
        out += ["", "Processes whose argv names the pair's switch: " + "; ".join(
            f"{name}: {', '.join(v)}" for name, v in c["processes"].items()) + "."]
    out += ["", "| plug | PSS kB idle | private kB idle | CPU idle % (wakeups/s) | peak PSS kB under TCP |",
            "|---|---|---|---|---|"]
    for name, kind in (("plug2tap", "vde_plug2tap"), ("wirefilter", "wirefilter")):
        i = c["idle"][name].get(f"a:{kind}", {})
        peak = (s[name].get("peak_pss_kb_max_tcp") or {}).get(f"a:{kind}")
        out.append(f"| {kind}{' (rate 10gbit)' if kind == 'wirefilter' else ''} | {i.get('pss_kb')} | {i.get('private_kb')} | "
                   f"{_f(i.get('cpu_pct'))} ({_f(i.get('wakeups_per_s'), 1)}) | {peak} |")
    q = c["queueing"]
    ib, ia = q["idle_before"].get("a:wirefilter", {}), q["idle_after"].get("a:wirefilter", {})
    out.append(f"| wirefilter (delay 50ms, rate 10mbit) | {ib.get('pss_kb')} | {ib.get('private_kb')} | "
               f"{_f(ib.get('cpu_pct'))} ({_f(ib.get('wakeups_per_s'), 1)}) | "
               f"{(q['load'].get('peak_pss_kb') or {}).get('a:wirefilter')} (TCP at {q['load']['mbit_s']:.1f} Mbit/s, "
               f"CPU {_f(q['load']['cpu_pct'].get('a:wirefilter'), 1)} %; after: PSS {ia.get('pss_kb')}) |")
    return "\n".join(out)


def _unimpaired_table(dp: dict) -> str:
    """An unimpaired endpoint on this build vs the references of the same run and vs the
    figures docs/benchmarks.md recorded before issue 13 (`BEFORE`)."""
    b = BEFORE
    out = [f"Unimpaired endpoints, container to container ({dp['reps']} interleaved rounds, iperf3 TCP "
           f"{dp['iperf_seconds']} s each way, {dp['pings']} pings; `dataplane.run_dataplane`):", "",
           "| path | TCP a→b Mbit/s | TCP b→a Mbit/s | ping avg RTT ms | CPU of switch + plugs during TCP |",
           "|---|---|---|---|---|"]
    labels = {"vde": "vde network, this build", "vde_hand": "vde_switch + 2 × vde_plug2tap by hand, same netns",
              "bridge": "Docker bridge network", "kernel": "Linux bridge + veth (netns)"}
    paths = dp["paths"]
    for k, label in labels.items():
        x = paths.get(k)
        if not x:
            continue
        cpu = x.get("vde_cpu_pct_during_tcp")
        out.append(f"| {label} | {_m(x['tcp_fwd_mbit_s'])} | {_m(x['tcp_rev_mbit_s'])} | {_m(x['ping_avg_ms'], 3)} | "
                   f"{_f(cpu['median'], 0) + ' %' if cpu else '–'} |")
    out.append(f"| vde network before issue 13 (run `{b['run']}`, docs) | {b['tcp_fwd_mbit_s']:.0f} | "
               f"{b['tcp_rev_mbit_s']:.0f} | {b['ping_avg_ms']:.3f} | {b['vde_cpu_pct_during_tcp']:.0f} % |")
    v, h = paths.get("vde"), paths.get("vde_hand")
    if v and h:
        r = lambda key: v[key]["median"] / h[key]["median"]  # noqa: E731
        rb = lambda key, before: v[key]["median"] / before  # noqa: E731
        hb = (b["tcp_fwd_mbit_s"] / b["hand_tcp_fwd_mbit_s"], b["tcp_rev_mbit_s"] / b["hand_tcp_rev_mbit_s"])
        out += ["", f"vde / hand-started VDE in this run: TCP a→b {r('tcp_fwd_mbit_s'):.2f}, b→a {r('tcp_rev_mbit_s'):.2f}, "
                f"RTT {r('ping_avg_ms'):.2f} (before issue 13: {hb[0]:.2f}, {hb[1]:.2f}); this build / before: "
                f"TCP a→b {rb('tcp_fwd_mbit_s', b['tcp_fwd_mbit_s']):.2f}, b→a {rb('tcp_rev_mbit_s', b['tcp_rev_mbit_s']):.2f} "
                "(different runs: the machine's load moves single figures, the ratio to hand-started VDE is the fair one)."]
    return "\n".join(out)


def _cpu(d: dict, role: str):
    for k, v in d.items():
        if k.startswith(role + ":"):
            return v.get("median")
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hand", action="store_true", help="hand-made pairs (vde_switch, wirefilter, vde_plug2tap), no Docker")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a results file (links key or a links run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results"))
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            r = json.load(f)
        lk = r.get("links", r)
        print(tables(lk, r.get("dataplane") or lk.get("dataplane")))
        return 0
    if not args.hand:
        ap.error("without --hand, run it through bench/run --only links")
    cleanup = Cleanup()
    try:
        res = run_links(HandPairs(cleanup), args.quick)
    finally:
        cleanup.run_all()
    res["backend"] = "hand"
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"links-hand-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
    log(f"results: {path}")
    print(tables(res))
    return 0


if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
