"""Packet capture (issue 14): what looking at the wire costs the network looked at.

Two containers A and B on a vde network; ping RTT A -> B (iputils, 0.2 s interval) and
iperf3 TCP both ways (client in A), every tool run on the host inside the containers' netns,
with

  vde             no capture
  segment         `vde-supervisor capture NET -w FILE`: the switch's capture plugin copies every
                  frame entering the switch to the worker, which hands it to the command
  endpoint        `vde-supervisor capture NET A -w FILE`: an AF_PACKET socket in A's netns
  slow_segment    `vde-supervisor capture NET | R`, R a pipe nobody reads: the command blocks
                  on its stdout, its socket fills, the worker drops (and counts) what does not fit
  slow_endpoint   the same for A's endpoint
  hub             another vde network with `-o hub=true` and a third, idle container C, which
                  gets every frame between A and B (no capture)

and, as the reference in the same run, two containers on a Docker bridge network

  bridge          no capture
  bridge_tcpdump  `tcpdump -i br-ID -w FILE` on the host (promiscuous: the bridge device gets a
                  copy of every frame it forwards)

The paths are measured interleaved, the order turned by one each round; each capture is
started before its path's measurement and stopped after it (SIGINT; the slow reader's pipe is
closed instead, so the command ends on EPIPE), and what it reports on stderr (`N frames
captured (M seen), D dropped`, tcpdump's `... dropped by kernel`) is kept, with the CPU of the
switch, the plugs, the worker and the capture command during TCP, the file's size, and what
was left behind after the capture ended (captures in `status`, files in the network's
`captures/` directory, the switch's `vdecapture` plugin still loaded).

Run through `bench/run --only capture` (it needs dockerd and the plugin lock);
`python3 bench/lib/capture.py --report bench/results/latest.json` prints the tables of a run."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfs  # noqa: E402
from common import stop_like_ctrl_c, DOCKER, IMAGE, LABEL, Cleanup, log, run, stats, stop_process  # noqa: E402
from dataplane import Path, _docker_pair, _ping, iperf_tcp  # noqa: E402

LABELS = {
    "vde": "vde network, no capture",
    "segment": "vde, segment capture to a file (`capture NET -w FILE`)",
    "endpoint": "vde, endpoint capture of A to a file (`capture NET A -w FILE`)",
    "slow_segment": "vde, segment capture into a pipe nobody reads",
    "slow_endpoint": "vde, endpoint capture of A into a pipe nobody reads",
    "hub": "vde network with `-o hub=true`, a third container idle",
    "bridge": "Docker bridge network, no capture",
    "bridge_tcpdump": "Docker bridge, `tcpdump -i br-ID -w FILE` on the host",
}
# Each path against its reference (same run): vde paths against `vde`, tcpdump against `bridge`.
REFERENCE = {"segment": "vde", "endpoint": "vde", "slow_segment": "vde", "slow_endpoint": "vde", "hub": "vde",
             "bridge_tcpdump": "bridge"}
SUMMARY = re.compile(r"(\d+) frames? captured \((\d+) seen\), (\d+|unknown) dropped")


@dataclass
class Net:
    """One pair of containers, and what to count the CPU of while it carries TCP."""
    name: str  # the key in LABELS of its uncaptured path
    path: Path
    network: str  # Docker's name
    network_id: str = ""
    containers: list[str] = field(default_factory=list)
    bridge_if: str = ""  # Docker bridge only

    def roles(self, sup) -> dict[str, list[int]]:
        """switch, plugs and worker of a vde network (by its short ID in their argv)."""
        if not self.network_id or sup is None:
            return {}
        short = self.network_id[:12]
        out: dict[str, list[int]] = {"switch": [], "plugs": [], "worker": []}
        for pid, (kind, argv) in procfs.processes_under(sup.run_dir).items():
            if not any(f"/{short}/" in a or a.endswith(f"/{short}") for a in argv):
                continue
            if kind == "vde_switch":
                out["switch"].append(pid)
            elif kind in ("vde_plug2tap", "wirefilter"):
                out["plugs"].append(pid)
        out["worker"] = [pid for pid, (_, argv) in sup.workers().items() if self.network_id in argv]
        return out


# --- building the pairs -----------------------------------------------------------------------

def _network_id(name: str) -> str:
    return run([DOCKER, "network", "inspect", "-f", "{{.Id}}", name]).stdout.strip()


def _make_vde(cleanup: Cleanup) -> Net:
    p = _docker_pair("capvde", 21, cleanup, ["-d", "vde"])
    net = Net("vde", p, "vdeb-dp-capvde", containers=["vdeb-dp-capvde-0", "vdeb-dp-capvde-1"])
    net.network_id = _network_id(net.network)
    return net


def _make_hub(cleanup: Cleanup) -> Net:
    p = _docker_pair("caphub", 23, cleanup, ["-d", "vde", "-o", "hub=true"])
    net = Net("hub", p, "vdeb-dp-caphub", containers=["vdeb-dp-caphub-0", "vdeb-dp-caphub-1"])
    name = "vdeb-dp-caphub-2"
    run([DOCKER, "run", "-d", "--name", name, "--label", LABEL, "--net", net.network, "--ip", "10.235.23.12", IMAGE,
         "sleep", "3600"])
    cleanup.push(f"container {name}", lambda: run([DOCKER, "rm", "-f", name], check=False))
    net.containers.append(name)
    net.network_id = _network_id(net.network)
    return net


def _make_bridge(cleanup: Cleanup) -> Net:
    p = _docker_pair("capbr", 22, cleanup, ["-d", "bridge"])
    net = Net("bridge", p, "vdeb-dp-capbr", containers=["vdeb-dp-capbr-0", "vdeb-dp-capbr-1"])
    net.network_id = _network_id(net.network)
    net.bridge_if = "br-" + net.network_id[:12]
    return net


# --- captures -----------------------------------------------------------------------------------

def _captures_in(status) -> list[dict]:
    """Every capture object anywhere in a status reply (a dict with id, frames and dropped)."""
    found = []
    if isinstance(status, dict):
        if {"id", "frames", "dropped"} <= status.keys():
            found.append(status)
        for v in status.values():
            found += _captures_in(v)
    elif isinstance(status, list):
        for v in status:
            found += _captures_in(v)
    return found


def _status(sup) -> dict:
    from plugin_client import PluginClient  # local import, as in common.Supervisor
    with PluginClient(sup.control, timeout=10) as c:
        return c.call("/v1/status", method="GET")


def _mgmt(sock_path: str, command: str, timeout: float = 3) -> str:
    """One command on a vde_switch management socket; the text up to its `1000 Success` or error line."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"$ " not in buf and time.monotonic() < deadline:  # banner and prompt
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.sendall(command.encode() + b"\n")
        out = b""
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if re.search(rb"(^|\n)1\d\d\d [^\n]*\n", out):
                break
        return out.decode(errors="replace")
    finally:
        s.close()


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


class VdeCapture:
    """`vde-supervisor capture NET [A]` to a file, or into a pipe nobody reads (`slow`)."""

    def __init__(self, sup, net: Net, endpoint: bool, slow: bool, workdir: str):
        self.sup, self.net, self.slow = sup, net, slow
        self.file = None if slow else os.path.join(workdir, f"{net.name}-{'ep' if endpoint else 'seg'}.pcap")
        argv = [os.path.join(sup.bin_dir, "vde-supervisor"), "capture", "--control-socket", sup.control, net.network]
        if endpoint:
            argv.append(net.containers[0])
        if self.file:
            argv += ["-w", self.file]
        self.argv = argv
        self.stderr_path = os.path.join(workdir, "capture.stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.read_end = None
        if slow:
            r, w = os.pipe()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=self.stderr,
                                         start_new_session=True)
            os.close(w)
            self.read_end = r  # held open, never read
        else:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self.stderr, start_new_session=True)
        self.started = time.monotonic()

    def pid(self) -> int:
        return self.proc.pid

    def wait_running(self) -> float:
        """Until the worker reports the capture with this command connected; seconds it took."""
        def connected() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"capture exited at start ({self.proc.returncode}): {self._stderr_tail()}")
            return any(c.get("clientPID") == self.proc.pid for c in _captures_in(_status(self.sup)))
        _wait(connected, 15, f"the capture `{' '.join(self.argv[2:])}` to connect")
        return time.monotonic() - self.started

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read()[-600:].decode(errors="replace").strip()

    def stop(self) -> dict:
        out: dict = {}
        mine = [c for c in _captures_in(_status(self.sup)) if c.get("clientPID") == self.proc.pid]
        if mine:
            out["status_frames"], out["status_dropped"] = mine[0].get("frames"), mine[0].get("dropped")
        t0 = time.monotonic()
        if self.slow:
            os.close(self.read_end)  # EPIPE on the command's stdout: how `| head` ends it
            self.read_end = None
        else:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            out["hung"] = True
            stop_process(self.proc, signal.SIGINT)
        out["stop_s"] = time.monotonic() - t0
        out["rc"] = self.proc.returncode
        tail = self._stderr_tail()
        self.stderr.close()
        m = SUMMARY.search(tail)
        if m:
            out["frames"], out["seen"] = int(m.group(1)), int(m.group(2))
            out["dropped"] = int(m.group(3)) if m.group(3).isdigit() else None
        else:
            out["stderr"] = tail[-300:]
        if self.file and os.path.exists(self.file):
            out["file_bytes"] = os.path.getsize(self.file)
        out["left"] = leftovers(self.sup, self.net)
        return out

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.read_end is not None:
            os.close(self.read_end)
            self.read_end = None
        with contextlib.suppress(Exception):
            self.stderr.close()


class Tcpdump:
    """`tcpdump -i br-ID -w FILE` in the host netns (promiscuous, tcpdump's default)."""

    def __init__(self, net: Net, workdir: str):
        self.file = os.path.join(workdir, "bridge.pcap")
        self.proc = subprocess.Popen(["tcpdump", "-n", "-i", net.bridge_if, "-w", self.file], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.started = time.monotonic()
        self.err = b""

    def pid(self) -> int:
        return self.proc.pid

    def wait_running(self) -> float:
        deadline = time.monotonic() + 15
        while b"listening on" not in self.err:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {self.err.decode(errors='replace')[-300:]}")
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.5)
            if ready:
                self.err += os.read(self.proc.stderr.fileno(), 4096)
        return time.monotonic() - self.started

    def stop(self) -> dict:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        _, rest = self.proc.communicate(timeout=30)
        text = (self.err + rest).decode(errors="replace")
        out = {"stop_s": time.monotonic() - t0, "rc": self.proc.returncode}
        for key, pat in (("frames", r"(\d+) packets? captured"), ("seen", r"(\d+) packets? received by filter"),
                         ("dropped", r"(\d+) packets? dropped by kernel")):
            m = re.search(pat, text)
            if m:
                out[key] = int(m.group(1))
        if os.path.exists(self.file):
            out["file_bytes"] = os.path.getsize(self.file)
        return out

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def leftovers(sup, net: Net) -> dict:
    """After a capture ended: captures the supervisor still reports for the network, entries of
    its captures/ directory, and whether its switch still has the capture plugin loaded."""
    out: dict = {}
    with contextlib.suppress(Exception):
        out["captures_in_status"] = len(_captures_in(_status(sup)))
    short = net.network_id[:12]
    cap_dir = os.path.join(sup.run_dir, short, "captures")
    out["captures_dir"] = sorted(os.listdir(cap_dir)) if os.path.isdir(cap_dir) else None
    mgmt = os.path.join(sup.run_dir, short, "mgmt")
    with contextlib.suppress(Exception):
        out["plugin_loaded"] = "vdecapture" in _mgmt(mgmt, "plugin/list")
    return out


def _readable(path: str) -> dict:
    """What `tcpdump -r` makes of a capture file: frames read and its error line, if any."""
    p = subprocess.run(["tcpdump", "-n", "-q", "-r", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    lines = p.stdout.count(b"\n")
    err = [ln for ln in p.stderr.decode(errors="replace").splitlines() if not ln.startswith("reading from file")]
    return {"tcpdump_r_frames": lines, "tcpdump_r_rc": p.returncode, "tcpdump_r_err": " ".join(err)[-200:]}


# --- measuring ----------------------------------------------------------------------------------

def _one(name: str, net: Net, sup, workdir: str, seconds: int, pings: int, check_file: bool) -> dict:
    """One measurement of one path: start its capture, iperf3 both ways, ping, stop the capture.
    TCP first: a slow reader's buffers are full by the time the pings cross (each then dropped)."""
    cap = None
    sample: dict = {}
    try:
        if name in ("segment", "endpoint", "slow_segment", "slow_endpoint"):
            cap = VdeCapture(sup, net, endpoint=name.endswith("endpoint"), slow=name.startswith("slow"), workdir=workdir)
        elif name == "bridge_tcpdump":
            cap = Tcpdump(net, workdir)
        if cap:
            sample["capture_ready_s"] = cap.wait_running()
        roles = net.roles(sup)
        if cap:
            roles["capture"] = [cap.pid()]
        sample["tcp_fwd"] = iperf_tcp(net.path, seconds, False, roles)
        sample["tcp_rev"] = iperf_tcp(net.path, seconds, True, roles)
        sample["ping"] = _ping(net.path, pings)
        if cap:
            c = cap.stop()
            path = getattr(cap, "file", None)
            if check_file and path and os.path.exists(path):
                c |= _readable(path)
            sample["capture"] = c
            cap = None
    finally:
        if cap:
            cap.abort()
        for f in os.listdir(workdir):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(workdir, f))
    return sample


def run_capture(quick: bool, cleanup: Cleanup, sup, reps: int | None = None, seconds: int | None = None,
                pings: int | None = None) -> dict:
    reps = reps or (1 if quick else 3)
    seconds = seconds or (3 if quick else 5)
    pings = pings or (10 if quick else 20)
    t_start = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="vdeb-cap-", dir="/tmp")
    cleanup.push(f"dir {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    res: dict = {"reps": reps, "iperf_seconds": seconds, "pings": pings, "errors": {}, "loadavg_start": os.getloadavg()}

    log("capture: two containers on a vde network")
    vde = _make_vde(cleanup)
    log("capture: two containers on a Docker bridge network")
    bridge = _make_bridge(cleanup)
    nets = {"vde": vde, "segment": vde, "endpoint": vde, "slow_segment": vde, "slow_endpoint": vde,
            "bridge": bridge, "bridge_tcpdump": bridge}
    try:
        log("capture: a vde network with -o hub=true and three containers")
        nets["hub"] = _make_hub(cleanup)
    except Exception as e:  # noqa: BLE001 - the rest of the section still counts
        log(f"capture: hub network FAILED: {e}")
        res["errors"]["hub"] = str(e)[:400]
    for net in {id(n): n for n in nets.values()}.values():
        run(net.path.ns("a") + ["ping", "-c", "3", "-i", "0.2", "-W", "2", net.path.ip_b], check=False)  # ARP

    order = list(nets)
    samples: dict[str, list[dict]] = {k: [] for k in order}
    for rep in range(reps):
        for name in order[rep % len(order):] + order[:rep % len(order)]:
            if name in res["errors"] and not samples[name]:
                continue  # failed in an earlier round: do not repeat its error every round
            log(f"capture: round {rep + 1}/{reps}: {name}")
            try:
                samples[name].append(_one(name, nets[name], sup, workdir, seconds, pings, check_file=rep == 0))
            except Exception as e:  # noqa: BLE001 - a failed path must not cost the others
                log(f"capture: {name} FAILED: {e}")
                res["errors"][name] = str(e)[:400]
    res["paths"] = summarise(samples)
    res["ratios"] = ratios(res["paths"])
    res["loadavg_end"] = os.getloadavg()
    res["seconds"] = time.perf_counter() - t_start
    return res


def _cpu_during_tcp(rows: list[dict]) -> dict:
    """Each role's CPU (% of one CPU) over both directions of every round's iperf3."""
    cpu: dict[str, list[float]] = {}
    for r in rows:
        for d in ("tcp_fwd", "tcp_rev"):
            for role, v in r[d]["cpu_pct"].items():
                cpu.setdefault(role, []).append(v)
    return {role: stats(v) for role, v in cpu.items()}


def summarise(samples: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rows in samples.items():
        if not rows:
            continue
        s: dict = {"label": LABELS[name], "samples": rows,
                   "tcp_fwd_mbit_s": stats([r["tcp_fwd"]["mbit_s"] for r in rows]),
                   "tcp_rev_mbit_s": stats([r["tcp_rev"]["mbit_s"] for r in rows]),
                   "ping_avg_ms": stats([r["ping"]["avg_ms"] for r in rows]),
                   "ping_loss_pct": stats([r["ping"]["loss_pct"] for r in rows if r["ping"]["loss_pct"] is not None])}
        s["cpu_pct_during_tcp"] = _cpu_during_tcp(rows)
        caps = [r["capture"] for r in rows if "capture" in r]
        if caps:
            s["capture"] = {k: stats([c[k] for c in caps if isinstance(c.get(k), (int, float))])
                            for k in ("frames", "seen", "dropped", "status_dropped", "file_bytes", "stop_s")}
            s["capture"]["ready_s"] = stats([r["capture_ready_s"] for r in rows if "capture_ready_s" in r])
            s["capture"]["left"] = [c.get("left") for c in caps if c.get("left") is not None]
            s["capture"]["rc"] = [c.get("rc") for c in caps]
            s["capture"]["hung"] = sum(1 for c in caps if c.get("hung"))
            s["capture"]["readable"] = [{k: c[k] for k in c if k.startswith("tcpdump_r")} for c in caps
                                        if "tcpdump_r_frames" in c]
        out[name] = s
    return out


def ratios(paths: dict) -> dict:
    out = {}
    for name, ref in REFERENCE.items():
        a, b = paths.get(name), paths.get(ref)
        if not a or not b:
            continue
        r = {}
        for key in ("tcp_fwd_mbit_s", "tcp_rev_mbit_s", "ping_avg_ms"):
            if a[key].get("n") and b[key].get("n") and b[key]["median"]:
                r[key] = a[key]["median"] / b[key]["median"]
        out[name] = r
    return out


# --- report ---------------------------------------------------------------------------------------

def _m(s: dict | None, d: int = 0) -> str:
    if not s or not s.get("n"):
        return "–"
    if s["n"] == 1:
        return f"{s['median']:.{d}f}"
    return f"{s['median']:.{d}f} ({s['min']:.{d}f}–{s['max']:.{d}f})"


def _f(x, d: int = 2) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def tables(res: dict) -> str:
    out: list[str] = []
    paths, rat = res.get("paths", {}), res.get("ratios", {})
    out += [f"{res['reps']} interleaved rounds; per round and path iperf3 TCP {res['iperf_seconds']} s each way, "
            f"then {res['pings']} pings at 0.2 s (ping after TCP, so that a slow reader's buffers are full). "
            "Ratios: path / its reference in this run (vde paths / `vde, no capture`; tcpdump / bridge), medians.", "",
            "| path | TCP A→B Mbit/s | ratio | TCP B→A Mbit/s | ratio | ping avg RTT ms | ratio |",
            "|---|---|---|---|---|---|---|"]
    for name in LABELS:
        x = paths.get(name)
        if not x:
            continue
        r = rat.get(name, {})
        out.append(f"| {x['label']} | {_m(x['tcp_fwd_mbit_s'])} | {_f(r.get('tcp_fwd_mbit_s'))} | "
                   f"{_m(x['tcp_rev_mbit_s'])} | {_f(r.get('tcp_rev_mbit_s'))} | {_m(x['ping_avg_ms'], 3)} | "
                   f"{_f(r.get('ping_avg_ms'))} |")
    out += ["", "CPU during TCP, % of one CPU (median over both directions and all rounds):", "",
            "| path | switch | plugs | worker | capture command |", "|---|---|---|---|---|"]
    for name in LABELS:
        x = paths.get(name)
        if not x:
            continue
        c = x.get("cpu_pct_during_tcp", {})
        cell = lambda role: _f((c.get(role) or {}).get("median"), 0) if (c.get(role) or {}).get("n") else "–"  # noqa: E731
        out.append(f"| {x['label']} | {cell('switch')} | {cell('plugs')} | {cell('worker')} | {cell('capture')} |")
    caps = [(n, paths[n]) for n in LABELS if n in paths and "capture" in paths[n]]
    if caps:
        out += ["", "What each capture reported when it ended (per round: frames written, frames seen, dropped; "
                "file size), how long it took to start and to stop, and what it left:", "",
                "| capture | frames written | seen | dropped | dropped (worker, before the end) | file MB | "
                "start s | stop s | exit status | left behind |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, x in caps:
            c = x["capture"]
            mb = c["file_bytes"]
            left = c.get("left") or []
            dirty = [lf for lf in left if lf.get("captures_in_status") or lf.get("captures_dir") or lf.get("plugin_loaded")]
            left_txt = ("nothing" if not dirty else "; ".join(json.dumps(d, sort_keys=True) for d in dirty)[:200]) \
                if left else "–"
            out.append(f"| {x['label']} | {_m(c['frames'])} | {_m(c['seen'])} | {_m(c['dropped'])} | "
                       f"{_m(c['status_dropped'])} | "
                       f"{_m({k: (v / 1e6 if k != 'n' else v) for k, v in mb.items()}, 1) if mb.get('n') else '–'} | "
                       f"{_m(c['ready_s'], 2)} | {_m(c['stop_s'], 2)} | {', '.join(str(v) for v in c['rc'])}"
                       f"{' (' + str(c['hung']) + ' hung)' if c.get('hung') else ''} | {left_txt} |")
        readable = [(x["label"], r) for _, x in caps for r in x["capture"].get("readable", [])]
        if readable:
            out += ["", "`tcpdump -r FILE` of the first round's files: " + "; ".join(
                f"{label}: {r['tcpdump_r_frames']} frames (exit {r['tcpdump_r_rc']}"
                f"{', ' + r['tcpdump_r_err'] if r['tcpdump_r_err'] else ''})" for label, r in readable) + "."]
    if res.get("errors"):
        out += ["", "Failed: " + "; ".join(f"{k}: {(v.splitlines() or [''])[0][:200]}" for k, v in res["errors"].items()) + "."]
    return "\n".join(out)


# --- the switch's plugin alone, no worker, no Docker (--hand) ---------------------------------------

class HandSink:
    """What the worker does for a segment capture, by hand: listen at a sink, load the plugin
    into the switch, `vdecapture/start SINK`; then read the records into a file (a thread), or
    never read them (`slow`)."""

    def __init__(self, mgmt: str, plugin: str, workdir: str, slow: bool):
        import threading
        self.mgmt, self.slow = mgmt, slow
        self.path = os.path.join(workdir, "sink")
        self.file = os.path.join(workdir, "hand.records")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        for cmd in (f"plugin/add {plugin}", f"vdecapture/start {self.path}"):
            reply = _mgmt(mgmt, cmd)
            if "1000 Success" not in reply:
                raise RuntimeError(f"{cmd}: {reply.strip()}")
        self.conn, _ = self.listener.accept()
        self.bytes = 0
        self.thread = None
        if not slow:
            def pump():
                with open(self.file, "wb") as f:
                    while True:
                        chunk = self.conn.recv(1 << 18)
                        if not chunk:
                            return
                        f.write(chunk)
                        self.bytes += len(chunk)
            self.thread = threading.Thread(target=pump, daemon=True)
            self.thread.start()

    def stop(self) -> dict:
        st = _mgmt(self.mgmt, "vdecapture/stats")
        m = re.search(r"active=(\d) frames=(\d+) dropped=(\d+)", st)
        for cmd in ("vdecapture/stop", "plugin/del vdecapture"):
            _mgmt(self.mgmt, cmd)
        self.conn.shutdown(socket.SHUT_RDWR)
        if self.thread:
            self.thread.join(timeout=10)
        self.conn.close()
        self.listener.close()
        os.unlink(self.path)
        out = {"plugin_frames": int(m.group(2)), "plugin_dropped": int(m.group(3))} if m else {"stats": st[-200:]}
        out["bytes_read"] = self.bytes
        out["plugin_loaded_after"] = "vdecapture" in _mgmt(self.mgmt, "plugin/list")
        return out


def run_hand(bin_dir: str, reps: int, seconds: int, pings: int) -> dict:
    """A vde_switch and two netns with taps and vde_plug2tap (links.HandPairs): no capture, the
    plugin feeding a reader that writes a file, the plugin feeding a reader that never reads."""
    import links
    cleanup = Cleanup()
    workdir = tempfile.mkdtemp(prefix="vdeb-cap-", dir="/tmp")
    cleanup.push(f"dir {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    plugin = os.path.join(bin_dir, "vde-capture.so")
    samples: dict[str, list[dict]] = {"hand": [], "hand_plugin_file": [], "hand_plugin_slow": []}
    try:
        pair = links.HandPairs(cleanup).make("cap", {}, {})
        mgmt = os.path.join(pair.marker, "mgmt")
        path = Path("hand", pair.a.ns, pair.b.ns, pair.a.ip, pair.b.ip)
        _ping(path, 3)
        roles = {r: [pid for pid, (role, _) in pair.processes().items() if role == r] for r in ("switch", "a", "b")}
        roles = {"switch": roles["switch"], "plugs": roles["a"] + roles["b"]}
        order = list(samples)
        for rep in range(reps):
            for name in order[rep % len(order):] + order[:rep % len(order)]:
                log(f"capture --hand: round {rep + 1}/{reps}: {name}")
                sink = HandSink(mgmt, plugin, workdir, slow=name.endswith("slow")) if name != "hand" else None
                try:
                    row = {"tcp_fwd": iperf_tcp(path, seconds, False, roles), "tcp_rev": iperf_tcp(path, seconds, True, roles),
                           "ping": _ping(path, pings)}
                    if sink:
                        row["capture"] = sink.stop()
                        sink = None
                    samples[name].append(row)
                finally:
                    if sink:
                        sink.stop()
                    for f in os.listdir(workdir):
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(workdir, f))
    finally:
        cleanup.run_all()
    paths = summarise_hand(samples)
    return {"reps": reps, "iperf_seconds": seconds, "pings": pings, "paths": paths}


HAND_LABELS = {"hand": "vde_switch + 2 × vde_plug2tap by hand, no plugin",
               "hand_plugin_file": "the same with vde-capture.so feeding a reader that writes a file",
               "hand_plugin_slow": "the same with vde-capture.so feeding a reader that never reads"}


def summarise_hand(samples: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rows in samples.items():
        if not rows:
            continue
        s = {"label": HAND_LABELS[name], "samples": rows,
             "tcp_fwd_mbit_s": stats([r["tcp_fwd"]["mbit_s"] for r in rows]),
             "tcp_rev_mbit_s": stats([r["tcp_rev"]["mbit_s"] for r in rows]),
             "ping_avg_ms": stats([r["ping"]["avg_ms"] for r in rows])}
        s["cpu_pct_during_tcp"] = _cpu_during_tcp(rows)
        out[name] = s
    return out


def hand_table(res: dict) -> str:
    base = res["paths"].get("hand")
    out = [f"{res['reps']} interleaved rounds, iperf3 TCP {res['iperf_seconds']} s each way, {res['pings']} pings:", "",
           "| path | TCP A→B Mbit/s | TCP B→A Mbit/s | ping avg RTT ms | CPU switch / plugs % | plugin frames / dropped |",
           "|---|---|---|---|---|---|"]
    for name, x in res["paths"].items():
        c = x["cpu_pct_during_tcp"]
        caps = [r["capture"] for r in x["samples"] if "capture" in r]
        fr = "; ".join(f"{cp.get('plugin_frames')} / {cp.get('plugin_dropped')}" for cp in caps) or "–"
        ratio = ""
        if base and name != "hand":
            ratio = f" ({x['tcp_fwd_mbit_s']['median'] / base['tcp_fwd_mbit_s']['median']:.2f})"
        out.append(f"| {x['label']} | {_m(x['tcp_fwd_mbit_s'])}{ratio} | {_m(x['tcp_rev_mbit_s'])} | "
                   f"{_m(x['ping_avg_ms'], 3)} | {_f(c['switch']['median'], 0)} / {_f(c['plugs']['median'], 0)} | {fr} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", metavar="JSON",
                    help="print the tables of a results file (its capture key); measure with bench/run --only capture")
    ap.add_argument("--hand", metavar="BIN_DIR",
                    help="the switch's capture plugin alone (BIN_DIR/vde-capture.so), no worker, no Docker")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    if args.hand:
        res = run_hand(args.hand, args.rounds, args.seconds, 20)
        out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results",
                           f"capture-hand-{time.strftime('%Y%m%d-%H%M%S')}.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
        log(f"results: {out}")
        print(hand_table(res))
        return 0
    if not args.report:
        ap.error("--report JSON or --hand BIN_DIR")
    with open(args.report) as f:
        r = json.load(f)
    print(tables(r.get("capture", r)))
    return 0


if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
