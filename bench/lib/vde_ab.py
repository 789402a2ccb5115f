"""A/B of the two VDE paths through the same two containers: the plugin's unimpaired pair (a
vde network) and a hand-started vde_switch + 2 x vde_plug2tap whose taps sit in the same
containers as a second interface (dataplane._hand_vde), alternating, iperf3 TCP both ways.
Needs a release build, dockerd and the plugin lock (taken here), like bench/run:

    python3 bench/lib/vde_ab.py --bin-dir .build/release [--rounds 4] [--seconds 5]

Results: bench/results/ab-unimpaired-<stamp>.json, and a summary on stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dataplane  # noqa: E402
import procfs  # noqa: E402
from common import stop_like_ctrl_c, REAL_SOCKET, Cleanup, Supervisor, log, real_socket_lock, stats, write_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results"))
    args = ap.parse_args()
    out: dict = {"vde": {"fwd": [], "rev": []}, "vde_hand": {"fwd": [], "rev": []}, "loadavg_start": os.getloadavg(),
                 "rounds": args.rounds, "seconds": args.seconds}
    with real_socket_lock():
        sup = Supervisor(args.bin_dir, socket_path=REAL_SOCKET)
        cleanup = Cleanup()
        try:
            sup.start()
            vde = dataplane._docker_pair("vde", 1, cleanup, ["-d", "vde"])
            vde.vde_pids = [pid for pid, (kind, _) in procfs.processes_under(sup.run_dir).items()
                            if kind in ("vde_switch", "vde_plug2tap")]
            hand = dataplane._hand_vde(cleanup, into=vde)
            for p in (vde, hand):
                dataplane._ping(p, 5)
            for rep in range(args.rounds):
                for p in ((vde, hand) if rep % 2 == 0 else (hand, vde)):
                    for d, rev in (("fwd", False), ("rev", True)):
                        r = dataplane._iperf(p, args.seconds, rev)
                        out[p.name][d].append(r)
                        log(f"round {rep + 1}: {p.name} {d} {r['mbit_s']:.0f} Mbit/s, switch + plugs {r['vde_cpu_pct']:.0f} %")
        finally:
            cleanup.run_all()
            sup.stop()
            sup.remove_workdir()
    out["loadavg_end"] = os.getloadavg()
    for name in ("vde", "vde_hand"):
        for d in ("fwd", "rev"):
            s = stats([x["mbit_s"] for x in out[name][d]])
            cpu = stats([x["vde_cpu_pct"] for x in out[name][d]])
            out[f"{name}_{d}"] = {"mbit_s": s, "cpu_pct": cpu}
            print(f"{name} {d}: {s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}) Mbit/s, switch + plugs {cpu['median']:.0f} %")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"ab-unimpaired-{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_json(path, out)
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
