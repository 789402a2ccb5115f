"""Control plane: `docker network create`/`rm` and `docker run` with the vde plugin, with the
floor plugin (bench/lib/floor_plugin.py: answers every call at once and does nothing, so it
costs what dockerd itself costs with a remote plugin) and with bridge, interleaved in rounds
(A B C, B C A, ...); per-call times from both plugins' own logs; and endpoint cycles straight
over the plugin socket of a private supervisor.

Standalone (root, dockerd, the image; takes the plugin lock only while measuring):
    python3 bench/lib/controlplane.py --bin-dir .build/release --rounds 10
The ratios are measured with the supervisor at its default log level (info); the per-call table
needs it at debug (one `the Docker plugin API call duration=... path=...` line per call), so a
second, shorter pass at debug gives it (`--table-rounds`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (stop_like_ctrl_c, DOCKER, IMAGE, LABEL, REAL_SOCKET, Cleanup, Supervisor, log, ratio,  # noqa: E402
                    real_socket_lock, run, socket_answers, stats, stop_process, timed, write_json)
from plugin_client import PluginClient  # noqa: E402

FLOOR = "vdefloor"  # the floor plugin's driver name (its socket is not vde.sock: no lock needed)
FLOOR_SOCKET = f"/run/docker/plugins/{FLOOR}.sock"
PREFIX = "vdeb"  # names of the Docker networks made here; the standalone entry uses its own
# Their label: benchmain's stale cleanup removes every network with LABEL, so a standalone run
# (while someone else's bench/run starts) uses a label of its own.
NET_LABEL = LABEL


def _rm_network(name: str) -> None:
    run([DOCKER, "network", "rm", name], check=False)


def _rotated(names: list[str], i: int) -> list[str]:
    """Round i's order: each kind goes first in turn, so none always follows the same other."""
    k = i % len(names)
    return names[k:] + names[:k]


class FloorPlugin:
    """bench/lib/floor_plugin.py as a child process, logging each call's milliseconds."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        if socket_answers(FLOOR_SOCKET):
            raise RuntimeError(f"something answers on {FLOOR_SOCKET} already (another floor plugin?)")
        self.logf = open(self.log_path, "ab")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor_plugin.py")
        self.proc = subprocess.Popen([sys.executable, script, "--socket", FLOOR_SOCKET, "--verbose"],
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while not socket_answers(FLOOR_SOCKET):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the floor plugin did not start; see {self.log_path}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
            self.proc = None
            self.logf.close()

    def log_size(self) -> int:
        return os.path.getsize(self.log_path)


# --- per-call times from the plugins' logs ---------------------------------------------------------

_SUP_CALL = re.compile(r" debug [^:]+: the Docker plugin API call duration=([0-9.e+-]+) seconds path=(\S+) status=(\d+)")
_FLOOR_CALL = re.compile(r"^\S+ (/\S+) (\d+) ([0-9.]+) ms$")


def _log_calls(path: str, start: int, end: int, pattern: re.Pattern, ms_scale: float) -> dict[str, list[float]]:
    """{call: [ms, ...]} from the log lines between byte offsets start and end."""
    calls: dict[str, list[float]] = {}
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    for line in text.splitlines():
        m = pattern.search(line)
        if not m:
            continue
        if pattern is _SUP_CALL:
            ms, call = float(m.group(1)) * ms_scale, m.group(2)
        else:
            call, ms = m.group(1), float(m.group(3))
        calls.setdefault(call.lstrip("/"), []).append(ms)
    return calls


# Steps of CreateNetwork and DeleteNetwork in the supervisor's and its workers' debug log, in
# order: (name, where the line comes from, what it starts with). The network is the one named by
# the `network up` / `network removed` line that precedes the call's own line.
_STEPS = {
    "NetworkDriver.CreateNetwork": [
        ("validated, worker spawned", "sup", "worker started"),
        ("worker exec + init", "worker", "worker started"),
        ("worker listens on its socket", "worker", "listening for a supervisor"),
        ("worker gets start, spawns vde_switch", "worker", "starting "),
        ("vde_switch up (daemon and its pid file)", "worker", "switch up"),
        ("start reply reaches the supervisor", "sup", "network up"),
        ("state written, reply", "reply", ""),
    ],
    "NetworkDriver.DeleteNetwork": [
        ("state written, shutdown sent", "worker", "shutting down"),
        ("vde_switch stopped", "worker", "switch stopped"),
        ("worker cleans up, exits", "worker", "worker exits"),
        ("supervisor sees the exit", "sup", "network removed"),
        ("reply", "reply", ""),
    ],
}
_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3,6})Z \S+ (vde-supervisor|vde-networker\[([0-9a-f]+)\]): (.*)$")


def step_timeline(log_path: str, start: int, end: int) -> dict:
    """Median ms of each step of CreateNetwork and DeleteNetwork (``_STEPS``) from the debug log
    (microsecond timestamps; millisecond ones in older logs), and how many calls were broken down."""
    from datetime import datetime
    with open(log_path, "rb") as f:
        f.seek(start)
        lines = f.read(end - start).decode(errors="replace").splitlines()
    events: dict[str, list[tuple[float, str, str]]] = {}  # network short ID -> (t, who, message)
    last_net = None
    out: dict[str, dict[str, list[float]]] = {call: {} for call in _STEPS}
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1)).timestamp()
        who, msg = ("worker", m.group(4)) if m.group(3) else ("sup", m.group(4))
        net = m.group(3) or (re.search(r"network=([0-9a-f]{12})", msg) or [None, None])[1]
        if net:
            events.setdefault(net, []).append((t, who, msg))
            if msg.startswith("network up") or msg.startswith("network removed"):
                last_net = net
        c = _SUP_CALL.search(line)
        if not c or c.group(2).lstrip("/") not in _STEPS or last_net is None:
            continue
        call = c.group(2).lstrip("/")
        t_end = t
        t_prev = t_end - float(c.group(1))
        seen = [e for e in events.pop(last_net, []) if e[0] >= t_prev - 0.002]
        last_net = None
        for name, src, prefix in _STEPS[call]:
            if src == "reply":
                hit = t_end
            else:
                hit = next((e[0] for e in seen if e[1] == src and e[2].startswith(prefix)), None)
            if hit is None:
                continue
            out[call].setdefault(name, []).append(max(hit - t_prev, 0.0) * 1000)
            t_prev = hit
    return {call: {name: {"n": len(v), "median_ms": statistics.median(v)} for name, v in steps.items()}
            for call, steps in out.items()}


# The calls of one operation, as dockerd sends them (networks with the plugin's IPAM for
# create/rm, with Docker's IPAM for docker run: see the kinds below).
OPERATIONS = {
    "network create": ["IpamDriver.RequestPool", "IpamDriver.RequestAddress", "NetworkDriver.CreateNetwork"],
    "network rm": ["IpamDriver.ReleaseAddress", "IpamDriver.ReleasePool", "NetworkDriver.DeleteNetwork"],
    "docker run": ["NetworkDriver.CreateEndpoint", "NetworkDriver.Join", "NetworkDriver.ProgramExternalConnectivity",
                   "NetworkDriver.EndpointOperInfo", "NetworkDriver.RevokeExternalConnectivity",
                   "NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"],
}


def call_table(vde: dict[str, list[float]], floor: dict[str, list[float]], operation: str) -> dict:
    """Per call: median and max ms and count, for vde and for the floor; and the operation's total:
    the sum of the medians (EndpointOperInfo times how often dockerd sends it per container)."""
    rows = {}
    totals = {"vde": 0.0, "floor": 0.0}
    for call in OPERATIONS[operation]:
        row = {}
        for who, calls in (("vde", vde), ("floor", floor)):
            v = calls.get(call, [])
            row[who] = {"n": len(v), "median_ms": statistics.median(v) if v else None, "max_ms": max(v) if v else None}
            if v:
                per_op = 1.0
                if call == "NetworkDriver.EndpointOperInfo":
                    per_op = len(v) / max(len(calls.get("NetworkDriver.CreateEndpoint", [])), 1)
                totals[who] += statistics.median(v) * per_op
        rows[call] = row
    return {"calls": rows, "total_ms_per_operation": totals}


# --- through dockerd ---------------------------------------------------------------------------

def docker_network_cycles(iterations: int, cleanup: Cleanup, floor: bool = False, bridge: bool = True) -> dict:
    """`docker network create` + `docker network rm`, interleaved over the kinds: vde with Docker's
    IPAM and with its own, bridge (unless not `bridge`), and with `floor` (a FloorPlugin running)
    the floor plugin both ways."""
    kinds = {
        "vde": ["-d", "vde"],
        "vde_ipam": ["-d", "vde", "--ipam-driver", "vde"],
    }
    if bridge:
        kinds["bridge"] = ["-d", "bridge"]
    if floor:
        kinds |= {"floor": ["-d", FLOOR], "floor_ipam": ["-d", FLOOR, "--ipam-driver", FLOOR]}
    names = list(kinds)
    times = {k: {"create": [], "rm": [], "total": []} for k in kinds}
    # One warm-up of each: the first call to a plugin includes dockerd's plugin discovery.
    for i in range(iterations + 1):
        for kind in _rotated(names, i):
            j = names.index(kind)
            name = f"{PREFIX}-cp-{kind}-{i}"
            subnet = f"10.231.{(i * len(names) + j) % 250}.0/24"
            cleanup.push(f"network {name}", lambda n=name: _rm_network(n))
            t_create, _ = timed([DOCKER, "network", "create", *kinds[kind], "--subnet", subnet, "--label", NET_LABEL, name])
            t_rm, _ = timed([DOCKER, "network", "rm", name])
            cleanup.actions.pop()
            if i == 0:
                continue
            times[kind]["create"].append(t_create)
            times[kind]["rm"].append(t_rm)
            times[kind]["total"].append(t_create + t_rm)
    out = {k: {m: stats(v) | {"samples": v} for m, v in d.items()} for k, d in times.items()}
    pairs = [("vde", "bridge"), ("vde_ipam", "bridge")] if bridge else []
    if floor:
        pairs += [("vde", "floor"), ("vde_ipam", "floor_ipam")] + ([("floor", "bridge")] if bridge else [])
    for a, b in pairs:
        out[f"ratio_{a}_over_{b}"] = {m: ratio(out[a][m], out[b][m]) for m in ("create", "rm", "total")}
    return out


def docker_run_cycles(iterations: int, cleanup: Cleanup, floor: bool = False, bridge: bool = True) -> dict:
    """`docker run --rm --net NET IMAGE true` on a vde network vs a bridge network (unless not
    `bridge`; and with `floor`, a network of the floor plugin); Docker's IPAM on all of them."""
    nets = {"vde": (f"{PREFIX}-run-vde", ["-d", "vde"], "10.232.1.0/24")}
    if bridge:
        nets["bridge"] = (f"{PREFIX}-run-br", ["-d", "bridge"], "10.232.2.0/24")
    if floor:
        nets["floor"] = (f"{PREFIX}-run-floor", ["-d", FLOOR], "10.232.3.0/24")
    for kind, (name, args, subnet) in nets.items():
        run([DOCKER, "network", "create", *args, "--subnet", subnet, "--label", NET_LABEL, name])
        cleanup.push(f"network {name}", lambda n=name: _rm_network(n))
    names = list(nets)
    times = {k: [] for k in nets}
    try:
        for i in range(iterations + 1):
            for kind in _rotated(names, i):
                dt, _ = timed([DOCKER, "run", "--rm", "--label", NET_LABEL, "--net", nets[kind][0], IMAGE, "true"])
                if i > 0:
                    times[kind].append(dt)
    finally:
        for kind, (name, _, _) in nets.items():
            _rm_network(name)
        cleanup.actions = [a for a in cleanup.actions if not a[0].startswith(f"network {PREFIX}-run-")]
    out = {k: stats(v) | {"samples": v} for k, v in times.items()}
    if bridge:
        out["ratio_vde_over_bridge"] = ratio(out["vde"], out["bridge"])
    if floor:
        out["ratio_vde_over_floor"] = ratio(out["vde"], out["floor"])
        if bridge:
            out["ratio_floor_over_bridge"] = ratio(out["floor"], out["bridge"])
    return out


def run_against_floor(bin_dir: str, rounds: int, cleanup: Cleanup, results_dir: str,
                      sup: Supervisor | None = None, log_level: str = "info", table_rounds: int = 10) -> dict:
    """The control plane against its floor: network create + rm and docker run with vde, the floor
    plugin and bridge, interleaved, and the per-call table from both plugins' logs.

    With `sup` (a supervisor already serving vde.sock) it measures with that one; otherwise it
    takes the plugin lock and starts one at `log_level` on vde.sock for the measures only. The
    ratios are measured at `log_level`, by default the plugin's own default (info): at debug it
    writes a dozen lines more per network, which cost create + rm 1 to 3 ms here (three runs of
    30 rounds each way). The per-call table needs debug: when the ratios were measured at another
    level, a second pass of `table_rounds` rounds at debug gives it."""
    floor = FloorPlugin(os.path.join(results_dir, "floor-plugin.log"))
    floor.start()
    cleanup.push("floor plugin", floor.stop)
    out: dict = {"rounds": rounds, "loadavg": {"start": os.getloadavg()}}
    try:
        measured = _measure(bin_dir, rounds, cleanup, results_dir, floor, sup, log_level, "controlplane")
        out["supervisor_log_level"] = measured["log_level"]
        out["network_create_rm"] = measured["network_create_rm"]
        out["docker_run"] = measured["docker_run"]
        if "calls" not in measured and sup is None and table_rounds > 0:
            # Only vde and the floor: the table has no bridge row.
            measured = _measure(bin_dir, table_rounds, cleanup, results_dir, floor, None, "debug", "calls",
                                bridge=False)
            out["calls_rounds"] = table_rounds
        else:
            out["calls_rounds"] = rounds
        out["calls"] = measured.get("calls", {})
        out["network_steps"] = measured.get("network_steps")
    finally:
        floor.stop()
        cleanup.actions = [a for a in cleanup.actions if a[0] != "floor plugin"]
    out["loadavg"]["end"] = os.getloadavg()
    return out


def _measure(bin_dir: str, rounds: int, cleanup: Cleanup, results_dir: str, floor: "FloorPlugin",
             sup: Supervisor | None, log_level: str, name: str, bridge: bool = True) -> dict:
    """One pass of both measures with vde (`sup`, or a supervisor of its own at `log_level`, its
    log kept as supervisor-NAME.log), the floor and (unless not `bridge`) bridge; and, when the
    supervisor logged at debug, the calls and steps its log shows."""
    own = sup is None
    lock = real_socket_lock() if own else contextlib.nullcontext()
    out: dict = {}
    with lock:
        if own:
            sup = Supervisor(bin_dir, socket_path=REAL_SOCKET, log_level=log_level)
            sup.start()
        out["log_level"] = sup.log_level
        try:
            marks = [(os.path.getsize(sup.log_path), floor.log_size())]
            log(f"control plane: docker network create + rm, {rounds} rounds (vde at {sup.log_level}, floor"
                f"{', bridge' if bridge else ''})")
            out["network_create_rm"] = docker_network_cycles(rounds, cleanup, floor=True, bridge=bridge)
            marks.append((os.path.getsize(sup.log_path), floor.log_size()))
            log(f"control plane: docker run --rm ... true, {rounds} rounds (vde at {sup.log_level}, floor"
                f"{', bridge' if bridge else ''})")
            out["docker_run"] = docker_run_cycles(rounds, cleanup, floor=True, bridge=bridge)
            marks.append((os.path.getsize(sup.log_path), floor.log_size()))
        finally:
            if own:
                sup.stop()
                sup.remove_workdir(keep_log_to=os.path.join(results_dir, f"supervisor-{name}.log"))
    if out["log_level"] != "debug":
        return out
    log_path = os.path.join(results_dir, f"supervisor-{name}.log") if own else sup.log_path
    calls = {}
    for phase, ops, (a, b) in (("network_create_rm", ["network create", "network rm"], (0, 1)),
                               ("docker_run", ["docker run"], (1, 2))):
        vde = _log_calls(log_path, marks[a][0], marks[b][0], _SUP_CALL, 1000.0)
        fl = _log_calls(floor.log_path, marks[a][1], marks[b][1], _FLOOR_CALL, 1.0)
        for op in ops:
            calls[op] = call_table(vde, fl, op)
        if phase == "network_create_rm":
            out["network_steps"] = step_timeline(log_path, marks[a][0], marks[b][0])
    out["calls"] = calls
    return out


def print_summary(r: dict) -> None:
    ms = lambda s: f"{s['median'] * 1000:7.1f}" if s.get("n") else "      -"  # noqa: E731
    f = lambda x: f"{x:.2f}" if x is not None else "-"  # noqa: E731
    n = r["network_create_rm"]
    print(f"\nnetwork create + rm, median ms ({r['rounds']} rounds; load {r['loadavg']['start'][0]:.1f} -> "
          f"{r['loadavg']['end'][0]:.1f})")
    print(f"{'':12} {'create':>7} {'rm':>7} {'total':>7}")
    for k in ("vde", "vde_ipam", "floor", "floor_ipam", "bridge"):
        print(f"{k:12} {ms(n[k]['create'])} {ms(n[k]['rm'])} {ms(n[k]['total'])}")
    for k in ("ratio_vde_over_floor", "ratio_vde_ipam_over_floor_ipam", "ratio_vde_over_bridge",
              "ratio_vde_ipam_over_bridge", "ratio_floor_over_bridge"):
        v = n[k]
        print(f"{k:34} create {f(v['create'])}  rm {f(v['rm'])}  total {f(v['total'])}")
    d = r["docker_run"]
    print("\ndocker run --rm true, median ms")
    for k in ("vde", "floor", "bridge"):
        print(f"{k:12} {ms(d[k])}")
    for k in ("ratio_vde_over_floor", "ratio_vde_over_bridge", "ratio_floor_over_bridge"):
        print(f"{k:34} {f(d[k])}")
    print(f"\nper call (plugins' own logs, {r.get('calls_rounds', r['rounds'])} rounds at debug), median ms [count]")
    for op, t in r["calls"].items():
        print(f"  {op}")
        for call, row in t["calls"].items():
            cell = lambda c: f"{c['median_ms']:7.2f} [{c['n']:3}]" if c["n"] else "      - [  0]"  # noqa: E731
            print(f"    {call:42} vde {cell(row['vde'])}   floor {cell(row['floor'])}")
        tot = t["total_ms_per_operation"]
        print(f"    {'sum per operation':42} vde {tot['vde']:7.2f}         floor {tot['floor']:7.2f}")
    for call, steps in (r.get("network_steps") or {}).items():
        print(f"\n{call}, step by step from the debug log (ms timestamps), median ms")
        for name, v in steps.items():
            print(f"    {name:42} {v['median_ms']:6.1f} [{v['n']}]")


def main() -> int:
    global PREFIX, NET_LABEL
    ap = argparse.ArgumentParser(description="control plane: vde vs the floor plugin vs bridge, through dockerd")
    ap.add_argument("--bin-dir", required=True, help="release binaries (vde-supervisor, vde-networker)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--results", help="directory for the JSON and logs (default: a new /tmp/vde-cp-* dir)")
    ap.add_argument("--log-level", default="info",
                    help="the supervisor's for the ratios (default: its own default, info)")
    ap.add_argument("--table-rounds", type=int, default=10,
                    help="rounds of the second pass at debug for the per-call table (0: none)")
    ap.add_argument("--prefix", default="vdecp", help="name prefix of the Docker networks made")
    args = ap.parse_args()
    PREFIX = args.prefix
    NET_LABEL = f"{args.prefix}-bench=1"
    results = args.results or tempfile.mkdtemp(prefix="vde-cp-", dir="/tmp")
    os.makedirs(results, exist_ok=True)
    cleanup = Cleanup()
    try:
        r = run_against_floor(os.path.abspath(args.bin_dir), args.rounds, cleanup, results, log_level=args.log_level,
                              table_rounds=args.table_rounds)
    finally:
        cleanup.run_all()
    out = os.path.join(results, "controlplane.json")
    write_json(out, r)
    print_summary(r)
    print(f"\nresults: {out}")
    return 0


def socket_endpoint_cycles(bin_dir: str, seconds: float, cleanup: Cleanup, results_dir: str) -> dict:
    """A private supervisor on a temporary socket (no Docker): how many full endpoint cycles
    (RequestAddress, CreateEndpoint, Join, Leave, DeleteEndpoint, ReleaseAddress) per second,
    and the latency of each call."""
    sup = Supervisor(bin_dir)
    cleanup.push("private supervisor", lambda: (sup.stop(), sup.remove_workdir()))
    sup.start()
    calls = ["RequestAddress", "CreateEndpoint", "Join", "Leave", "DeleteEndpoint", "ReleaseAddress"]
    lat = {c: [] for c in calls}
    net_create, net_delete = [], []
    cycles = 0
    sandbox = os.path.join(sup.workdir, "fake-sandbox")  # Join only records the key
    open(sandbox, "w").close()
    with PluginClient(sup.socket_path) as c:
        c.call("/Plugin.Activate")
        # Network create/delete over the socket (pool + network), a few times.
        for i in range(6):
            t0 = time.perf_counter()
            pool_id = c.request_pool(f"10.233.{i}.0/24")
            nid = secrets.token_hex(32)
            c.create_network(nid, f"10.233.{i}.0/24", f"10.233.{i}.1/24")
            t1 = time.perf_counter()
            c.delete_network(nid)
            c.release_pool(pool_id)
            t2 = time.perf_counter()
            net_create.append(t1 - t0)
            net_delete.append(t2 - t1)

        pool_id = c.request_pool("10.234.0.0/16")
        nid = secrets.token_hex(32)
        c.create_network(nid, "10.234.0.0/16", "10.234.0.1/16")
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            eid = secrets.token_hex(32)
            t = time.perf_counter()

            def step(name, call, *args):
                nonlocal t
                r = call(*args)
                now = time.perf_counter()
                lat[name].append(now - t)
                t = now
                return r

            addr = step("RequestAddress", c.request_address, pool_id)
            step("CreateEndpoint", c.create_endpoint, nid, eid, addr)
            step("Join", c.join, nid, eid, sandbox)
            step("Leave", c.leave, nid, eid)
            step("DeleteEndpoint", c.delete_endpoint, nid, eid)
            step("ReleaseAddress", c.release_address, pool_id, addr.split("/")[0])
            cycles += 1
        elapsed = time.perf_counter() - start
        c.delete_network(nid)
        c.release_pool(pool_id)
        reconnects = c.reconnects
    stop_s = sup.stop()
    leftovers = sup.leftovers()
    sup.remove_workdir(keep_log_to=os.path.join(results_dir, "supervisor-socket.log"))
    cleanup.actions = [a for a in cleanup.actions if a[0] != "private supervisor"]
    ms = lambda v: [x * 1000 for x in v]  # noqa: E731
    return {
        "cycles": cycles, "seconds": elapsed, "cycles_per_second": cycles / elapsed if elapsed else 0,
        "call_ms": {k: stats(ms(v)) for k, v in lat.items()},
        "network_create_ms": stats(ms(net_create)), "network_delete_ms": stats(ms(net_delete)),
        "keepalive_reconnects": reconnects, "supervisor_stop_s": stop_s, "leftovers": leftovers,
    }



if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
