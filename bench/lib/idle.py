"""Idle CPU: what the plugin's processes (and Docker's, for the reference) burn while nothing
happens, from /proc utime + stime over a quiet window, with the wakeups (context switches)
per second as the count of what woke them.

`bench/run --only idle` builds 100 vde networks with two containers each through dockerd,
measures, tears down, then does the same with Docker's bridge driver: the bridge driver lives
inside dockerd, so the comparison is the whole stack (dockerd, containerd, the containers'
shims) plus, for vde, the plugin's own processes.

By hand, without Docker (a private supervisor on its own socket, endpoints joined with their
taps left in the host namespace):

    python3 bench/lib/idle.py --bin-dir .build/release [--networks 100] [--seconds 60] [--trace 20] [--hold]

prints the figures, and with --hold keeps the lab until Ctrl-C (for strace, perf, pidstat)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfs  # noqa: E402
from common import stop_like_ctrl_c, Cleanup, Supervisor, log, stop_process  # noqa: E402
from lab import DockerLab, SocketLab, docker_processes, leftover_check  # noqa: E402
from plugin_client import PluginClient  # noqa: E402

PLUGIN_KINDS = ("vde-supervisor", "vde-networker", "vde-fork-server", "vde_switch", "vde_plug2tap")


def measure(procs: dict[int, tuple[str, list[str]]], seconds: float) -> dict:
    """CPU (% of one CPU) and wakeups per second of `procs` over `seconds`, per process kind.
    /proc/PID/stat counts in clock ticks (10 ms): each process's difference is off by less than
    a tick, so the sum over N active processes is off by about 0.4·√N ticks (±0.15 % of one CPU
    over 60 s at N = 300). Threads that exit during the window keep counting for CPU (the process
    keeps their time) but their context switches in the window are lost (a lower bound).
    A process that exits during the window counts up to its last reading and is named in
    `gone` (an idle lab should lose none)."""
    before = {pid: (procfs.cpu_seconds(pid), procfs.context_switches_by_thread(pid)) for pid in procs}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    kinds: dict[str, dict] = {}
    gone = []
    for pid, (kind, _) in procs.items():
        if not procfs.alive(pid):
            gone.append(pid)
            continue
        cpu = procfs.cpu_seconds(pid) - before[pid][0]
        switches = procfs.context_switches_since(before[pid][1], pid)
        k = kinds.setdefault(kind, {"count": 0, "pct_of_one_cpu": 0.0, "wakeups_per_s": 0.0})
        k["count"] += 1
        k["pct_of_one_cpu"] += 100 * cpu / wall
        k["wakeups_per_s"] += switches / wall
    plugin = sum(v["pct_of_one_cpu"] for k, v in kinds.items() if k in PLUGIN_KINDS)
    docker = sum(v["pct_of_one_cpu"] for k, v in kinds.items() if k not in PLUGIN_KINDS)
    return {"seconds": wall, "clock_ticks_per_s": procfs.CLOCK_TICKS, "kinds": kinds,
            "plugin_pct": plugin, "docker_pct": docker, "total_pct": plugin + docker,
            "plugin_wakeups_per_s": sum(v["wakeups_per_s"] for k, v in kinds.items() if k in PLUGIN_KINDS),
            "gone": gone, "loadavg": os.getloadavg()}


def syscalls(pids: dict[str, int], seconds: float) -> dict:
    """System calls per second of a few processes (all threads), from `strace -c -f` attached
    for `seconds` (after the CPU window: strace slows what it traces). {label: {call: per s}};
    {} without strace."""
    if not shutil.which("strace"):
        return {}
    procs = {}
    with tempfile.TemporaryDirectory(prefix="vdeb-strace-") as tmp:
        for label, pid in pids.items():
            out = os.path.join(tmp, f"{pid}.txt")
            procs[label] = (out, subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(seconds)
        result = {}
        for label, (out, p) in procs.items():
            stop_process(p, signal.SIGINT)
            calls = {}
            with contextlib.suppress(OSError):
                for line in open(out):
                    f = line.split()
                    # % time, seconds, usecs/call, calls, [errors,] syscall
                    if len(f) >= 5 and f[3].isdigit() and f[-1] != "total":
                        calls[f[-1]] = int(f[3]) / seconds
            result[label] = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
        return result


def docker_idle(networks: int, per_network: int, seconds: float, sup: Supervisor, cleanup: Cleanup,
                with_bridge: bool = True, settle: float = 10.0, trace_seconds: float = 20) -> dict:
    """The vde lab, then the bridge lab of the same size, each measured over `seconds` of quiet."""
    out: dict = {"networks": networks, "containers_per_network": per_network, "seconds": seconds}
    drivers = ["vde"] + (["bridge"] if with_bridge else [])
    for driver, octet in zip(drivers, (239, 240)):
        log(f"idle: {networks} {driver} networks x {per_network} containers")
        lab = DockerLab(driver, networks, per_network, octet, cleanup)
        run = lab.build()
        time.sleep(settle)  # first probes, logs, dockerd's own after-start work
        procs = docker_processes(lab.container_ids())
        if driver == "vde":
            procs |= sup.our_processes()
        log(f"idle: measuring {driver} over {seconds:.0f} s ({len(procs)} processes)")
        run["idle"] = measure(procs, seconds)
        tap_names: set[str] = set()
        if driver == "vde":
            workers = sorted(p for p, (k, _) in procs.items() if k == "vde-networker")
            if trace_seconds and workers:
                log(f"idle: system calls of the supervisor and one worker over {trace_seconds:.0f} s (strace -c)")
                run["syscalls_per_s"] = syscalls({"vde-supervisor": sup.pid(), "vde-networker": workers[0]},
                                                 trace_seconds)
            run["first_network_ping_ok"] = lab.ping_check(0)
            tap_names = lab.endpoint_taps()
            run["endpoints_seen"] = len(tap_names)
        run |= lab.teardown()
        if driver == "vde":
            time.sleep(0.5)
            run["leftovers"] = leftover_check(sup, lab.taps_before, tap_names)
        out[driver] = run
    if with_bridge:
        v, b = out["vde"]["idle"], out["bridge"]["idle"]
        out["ratio_total_vde_over_bridge"] = v["total_pct"] / b["total_pct"] if b["total_pct"] else None
    return out


def socket_idle(bin_dir: str, networks: int, per_network: int, seconds: float, hold: bool = False,
                trace_seconds: float = 0) -> dict:
    """A private supervisor with `networks` x `per_network` joined endpoints, measured."""
    cleanup = Cleanup()
    sup = Supervisor(bin_dir)
    cleanup.push("supervisor", lambda: (sup.stop(), sup.remove_workdir()))
    try:
        sup.start()
        lab = SocketLab(sup, networks, per_network)
        with PluginClient(sup.socket_path) as c:
            cleanup.push("lab", lambda: lab.teardown(c))
            log(f"building {networks} networks x {per_network} endpoints over {sup.socket_path}")
            build_s = lab.build(c)
            time.sleep(2)
            procs = sup.our_processes()
            log(f"measuring {len(procs)} processes over {seconds:.0f} s (supervisor pid {sup.pid()})")
            result = {"networks": networks, "endpoints_per_network": per_network, "build_s": build_s,
                      "idle": measure(procs, seconds)}
            print(format_idle(result["idle"]))
            workers = sorted(p for p, (k, _) in procs.items() if k == "vde-networker")
            if trace_seconds and workers:
                result["syscalls_per_s"] = syscalls({"vde-supervisor": sup.pid(), "vde-networker": workers[0]},
                                                    trace_seconds)
                for label, calls in result["syscalls_per_s"].items():
                    print(f"{label}: {sum(calls.values()):.0f} syscalls/s: " +
                          ", ".join(f"{c} {n:.1f}" for c, n in list(calls.items())[:10]))
            if hold:
                print(f"supervisor pid {sup.pid()}, workers {workers[:5]}... ; Ctrl-C ends the lab", flush=True)
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        return result
    finally:
        cleanup.run_all()


def format_idle(m: dict) -> str:
    lines = [f"idle over {m['seconds']:.0f} s: plugin {m['plugin_pct']:.2f} % of one CPU, "
             f"{m['plugin_wakeups_per_s']:.0f} wakeups/s; Docker {m['docker_pct']:.2f} %",
             f"{'kind':26} {'procs':>5} {'% of one CPU':>13} {'wakeups/s':>10}"]
    for kind, k in sorted(m["kinds"].items(), key=lambda kv: -kv[1]["pct_of_one_cpu"]):
        lines.append(f"{kind:26} {k['count']:5} {k['pct_of_one_cpu']:13.2f} {k['wakeups_per_s']:10.1f}")
    if m.get("gone"):
        lines.append(f"gone during the window: {m['gone']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/lib/idle.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--endpoints", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--trace", type=float, default=0, metavar="SECONDS",
                    help="then count the system calls of the supervisor and one worker (strace -c -f)")
    ap.add_argument("--hold", action="store_true", help="keep the lab after measuring, until Ctrl-C")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (taps)", file=sys.stderr)
        return 2

    socket_idle(os.path.abspath(args.bin_dir), args.networks, args.endpoints, args.seconds, args.hold, args.trace)
    return 0


if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
