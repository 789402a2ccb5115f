"""A/B of two builds of the plugin, same run, alternating: an unimpaired pair of containers on a
vde network, iperf3 TCP both ways and the CPU of the switch and plugs. For "an unimpaired
endpoint pays nothing" (issue 13): the build before a change vs after it.

    python3 bench/lib/ab_builds.py BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]

Build each with `swift build -c release --static-swift-stdlib` (see bench/run). Needs dockerd,
the test image and the plugin lock (taken here). Results: bench/results/ab-builds-<stamp>.json."""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dataplane  # noqa: E402
import procfs  # noqa: E402
from common import stop_like_ctrl_c, REAL_SOCKET, Cleanup, Supervisor, log, real_socket_lock, stats  # noqa: E402


def main() -> int:
    bins = {"before": sys.argv[1], "after": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    out = {k: {"fwd": [], "rev": []} for k in bins}
    out["loadavg_start"] = os.getloadavg()
    with real_socket_lock():
        for rep in range(rounds):
            order = ("before", "after") if rep % 2 == 0 else ("after", "before")
            for name in order:
                sup = Supervisor(bins[name], socket_path=REAL_SOCKET)
                cleanup = Cleanup()
                try:
                    sup.start()
                    p = dataplane._docker_pair("vde", 1, cleanup, ["-d", "vde"])
                    p.vde_pids = [pid for pid, (kind, _) in procfs.processes_under(sup.run_dir).items()
                                  if kind in ("vde_switch", "vde_plug2tap")]
                    dataplane._ping(p, 5)
                    for d, rev in (("fwd", False), ("rev", True)):
                        r = dataplane._iperf(p, 5, rev)
                        out[name][d].append(r)
                        log(f"round {rep+1}: {name} {d} {r['mbit_s']:.0f} Mbit/s, switch+plugs cpu {r['vde_cpu_pct']:.0f} %")
                finally:
                    cleanup.run_all()
                    sup.stop()
                    sup.remove_workdir()
    out["loadavg_end"] = os.getloadavg()
    for name in bins:
        for d in ("fwd", "rev"):
            s = stats([x["mbit_s"] for x in out[name][d]]); c = stats([x["vde_cpu_pct"] for x in out[name][d]])
            out[f"{name}_{d}"] = {"mbit_s": s, "cpu_pct": c}
            print(name, d, "Mbit/s", s, "cpu%", c)
    for d in ("fwd", "rev"):
        print("ratio after/before", d, out[f"after_{d}"]["mbit_s"]["median"] / out[f"before_{d}"]["mbit_s"]["median"])
    RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"ab-builds-{time.strftime('%Y%m%d-%H%M%S')}.json"), "w") as f:
        json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
