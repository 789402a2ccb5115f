"""A network's memory without Docker, per process kind, and where one worker's PSS goes.

A private supervisor on its own plugin socket gets `--networks` networks with two joined
endpoints each (``lab.SocketLab``: taps stay in the host namespace), and this prints the PSS per
network by kind (worker, switch, plugs), one worker's smaps profile and its threads by name.
With several `--bin-dir`s the builds are measured in turn, A B A B (`--rounds`), so that the
ratios compare runs made under the same load:

    python3 bench/lib/worker_memory.py --bin-dir .build/release [--networks 100] [--rounds 1]
        [--bin-dir OTHER ...] [--env NAME=VALUE ...] [--idle-seconds 0] [--json OUT] [--hold-file F]

A bin dir holds `vde-supervisor` and `vde-networker` (copy both of a build to keep it for a
later comparison). `run(...)` returns the same figures as a dict (for bench/run)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import idle  # noqa: E402
import procfs  # noqa: E402
import smaps_profile  # noqa: E402
from common import stop_like_ctrl_c, Supervisor, log, memory_breakdown  # noqa: E402
from lab import SocketLab, leftover_check  # noqa: E402
from plugin_client import PluginClient  # noqa: E402

# The fork server is one per supervisor; its share is counted per network like the rest.
KINDS = ("vde-networker", "vde-fork-server", "vde_switch", "vde_plug2tap")


def thread_names(pid: int) -> dict[str, int]:
    """The process's threads by name (comm), with how many share each name."""
    return dict(Counter(procfs.thread_name(pid, tid) for tid in procfs.threads(pid)))


def measure(bin_dir: str, networks: int, per_network: int = 2, env: dict | None = None,
            idle_seconds: float = 0, settle_s: float = 2, octet: int = 200, hold_file: str | None = None) -> dict:
    """Builds the lab, measures, tears it down; the figures in kB."""
    sup = Supervisor(bin_dir, env=env)
    try:
        sup.start()
        lab = SocketLab(sup, networks, per_network, octet=octet)
        with PluginClient(sup.socket_path) as c:
            build_s = lab.build(c)
            time.sleep(settle_s)  # first probes and logs
            procs = sup.our_processes()
            kinds = memory_breakdown(procs)
            workers = sorted(pid for pid, (kind, _) in procs.items() if kind == "vde-networker")
            worker_pss = sorted(procfs.smaps_rollup(pid).get("Pss", 0) for pid in workers)
            profile = smaps_profile.profile(workers[len(workers) // 2]) if workers else {}
            out = {
                "bin_dir": bin_dir, "env": env or {}, "networks": networks, "endpoints_per_network": per_network,
                "build_s": build_s, "loadavg": os.getloadavg(),
                "per_network_kb": {k: kinds.get(k, {}).get("pss_kb", 0) / networks for k in KINDS},
                "worker_pss_median_kb": statistics.median(worker_pss) if worker_pss else None,
                "supervisor_pss_kb": kinds.get("vde-supervisor", {}).get("pss_kb"),
                "counts": {k: v["count"] for k, v in kinds.items()},
                "worker_threads": thread_names(workers[0]) if workers else {},
                "profile_worker": profile,
            }
            out["per_network_kb"]["total"] = sum(out["per_network_kb"][k] for k in KINDS)
            if idle_seconds:
                out["idle"] = idle.measure(procs, idle_seconds)
            if hold_file:  # keep the lab for a look by hand until the file is removed
                open(hold_file, "w").write("\n".join(str(pid) for pid in workers) + "\n")
                log(f"holding the lab until {hold_file} is removed (it lists the workers' pids)")
                while os.path.exists(hold_file):
                    time.sleep(1)
            out["teardown_s"] = lab.teardown(c)
        time.sleep(0.5)
        out["leftovers"] = leftover_check(sup, lab.taps_before, lab.tap_names)
        return out
    finally:
        sup.stop()
        sup.remove_workdir()


def run(bin_dirs: list[str], networks: int = 100, rounds: int = 1, env: dict | None = None,
        idle_seconds: float = 0, hold_file: str | None = None) -> dict:
    """Each build `rounds` times, interleaved; per build the median of the rounds."""
    runs: dict[str, list[dict]] = {b: [] for b in bin_dirs}
    for r in range(rounds):
        for b in bin_dirs:
            log(f"worker memory: {b}, {networks} networks, round {r + 1}/{rounds}")
            runs[b].append(measure(b, networks, env=env, idle_seconds=idle_seconds, hold_file=hold_file))
    summary = {}
    for b, rs in runs.items():
        summary[b] = {k: statistics.median(r["per_network_kb"][k] for r in rs) for k in (*KINDS, "total")}
    return {"networks": networks, "rounds": rounds, "runs": runs, "per_network_kb_median": summary}


def format_run(m: dict) -> str:
    p = m["per_network_kb"]
    lines = [f"{m['bin_dir']} ({m['networks']} networks x {m['endpoints_per_network']}, "
             f"load {m['loadavg'][0]:.2f}, env {m['env'] or '-'})",
             "  per network PSS: " + ", ".join(f"{k} {p[k]:.0f} kB" for k in (*KINDS, "total"))
             + f" = {p['total'] / 1024:.3f} MiB",
             f"  worker median {m['worker_pss_median_kb']} kB; supervisor {m['supervisor_pss_kb']} kB",
             f"  worker threads ({sum(m['worker_threads'].values())}): "
             + ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(m["worker_threads"].items()))]
    if m.get("idle"):
        k = m["idle"]["kinds"].get("vde-networker", {})
        lines.append(f"  idle: workers {k.get('pct_of_one_cpu', 0):.2f} % of one CPU, "
                     f"{k.get('wakeups_per_s', 0):.1f} wakeups/s (all workers)")
    if not m["leftovers"].get("clean"):
        lines.append(f"  LEFTOVERS: {m['leftovers']}")
    if m["profile_worker"]:
        lines.append("  " + smaps_profile.format_profile(m["profile_worker"]).replace("\n", "\n  "))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", action="append", required=True)
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the supervisor and its workers")
    ap.add_argument("--idle-seconds", type=float, default=0)
    ap.add_argument("--hold-file", help="keep each lab until this file (written with the workers' pids) is removed")
    ap.add_argument("--json")
    a = ap.parse_args()
    env = dict(e.split("=", 1) for e in a.env) or None
    out = run(a.bin_dir, a.networks, a.rounds, env, a.idle_seconds, a.hold_file)
    for rs in out["runs"].values():
        for m in rs:
            print(format_run(m))
            print()
    if len(a.bin_dir) > 1:
        ref = out["per_network_kb_median"][a.bin_dir[0]]["total"]
        for b, s in out["per_network_kb_median"].items():
            print(f"{b}: {s['total']:.0f} kB per network (median), {s['total'] / ref:.3f} x {a.bin_dir[0]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    stop_like_ctrl_c()
    main()
