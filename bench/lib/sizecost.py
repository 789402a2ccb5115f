"""Size cost (issue 17): what one plugin call costs with few networks and with many.

Two private supervisors of one build run side by side over their own plugin sockets (no
Docker): one holding `small` idle networks, one holding `large`. Then, interleaved (small,
large, small, large...), each gets the same calls on one extra network of its own:
- the endpoint cycle: CreateEndpoint, Join, Leave, DeleteEndpoint (each call timed, and the four);
- a network create and delete: RequestPool, CreateNetwork, DeleteNetwork, ReleasePool (the
  CreateNetwork and DeleteNetwork calls timed; they start and stop a worker and its switch).
The figure is large/small of each median: 1.0 when a call's cost does not grow with the
number of networks. Every call writes the state before it replies, so this is where a state
write that grows with the state shows.

Standalone: python3 bench/lib/sizecost.py --bin-dir .build/release [--sizes 10,1000]
(root: Join makes taps). Prints a table and writes JSON with --json."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time

from common import stop_like_ctrl_c, Cleanup, Supervisor
from lab import SocketLab
from plugin_client import PluginClient

CYCLE_CALLS = ("CreateEndpoint", "Join", "Leave", "DeleteEndpoint")


def _summary(values: list[float]) -> dict:
    """Median and p90 in milliseconds."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"n": len(values), "median_ms": statistics.median(values) * 1e3, "p90_ms": p90 * 1e3,
            "min_ms": ordered[0] * 1e3}


class _Side:
    """One supervisor with `networks` idle networks and a probe network for the cycle."""

    def __init__(self, bin_dir: str, networks: int, octet: int, cleanup: Cleanup, label: str):
        self.networks = networks
        self.sup = Supervisor(bin_dir)
        cleanup.push(f"supervisor {label}", lambda: (self.sup.stop(), self.sup.remove_workdir()))
        self.sup.start()
        self.client = PluginClient(self.sup.socket_path)
        self.client.call("/Plugin.Activate")
        self.lab = SocketLab(self.sup, networks, 0, octet=octet)
        cleanup.push(f"lab {label}", lambda: self.lab.teardown(self.client))
        t0 = time.perf_counter()
        self.lab.build(self.client)
        self.build_s = time.perf_counter() - t0
        # The probe network: one more /24 past the lab's, and a second for create/delete.
        base = octet + (networks + 1) // 256 + 1
        self.probe_subnet = f"10.{base}.1.0/24"
        self.churn_subnet = f"10.{base}.2.0/24"
        self.probe_pool = self.client.request_pool(self.probe_subnet)
        self.probe_net = secrets.token_hex(32)
        self.client.create_network(self.probe_net, self.probe_subnet, self.probe_subnet.replace(".0/24", ".1/24"))
        self.address = self.client.request_address(self.probe_pool)
        self.sandbox = os.path.join(self.sup.workdir, "fake-sandbox")
        open(self.sandbox, "w").close()
        self.calls: dict[str, list[float]] = {name: [] for name in CYCLE_CALLS}
        self.calls |= {"cycle": [], "CreateNetwork": [], "DeleteNetwork": [], "network": []}

    def _timed(self, name: str, fn) -> float:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        self.calls[name].append(dt)
        return dt

    def cycle(self) -> None:
        c, nid, eid = self.client, self.probe_net, secrets.token_hex(32)
        total = self._timed("CreateEndpoint", lambda: c.create_endpoint(nid, eid, self.address))
        total += self._timed("Join", lambda: c.join(nid, eid, self.sandbox))
        total += self._timed("Leave", lambda: c.leave(nid, eid))
        total += self._timed("DeleteEndpoint", lambda: c.delete_endpoint(nid, eid))
        self.calls["cycle"].append(total)

    def network(self) -> None:
        c, nid = self.client, secrets.token_hex(32)
        pool = c.request_pool(self.churn_subnet)
        total = self._timed("CreateNetwork", lambda: c.create_network(
            nid, self.churn_subnet, self.churn_subnet.replace(".0/24", ".1/24")))
        total += self._timed("DeleteNetwork", lambda: c.delete_network(nid))
        c.release_pool(pool)
        self.calls["network"].append(total)

    def state_files(self) -> dict:
        """Sizes of what is in the state dir (bytes)."""
        out = {}
        for name in sorted(os.listdir(self.sup.state_dir)):
            path = os.path.join(self.sup.state_dir, name)
            if os.path.isfile(path):
                out[name] = os.path.getsize(path)
        return out

    def close(self) -> None:
        """Removes the probe network (the lab and the supervisor go by the cleanup actions)."""
        c = self.client
        c.release_address(self.probe_pool, self.address.split("/")[0])
        c.delete_network(self.probe_net)
        c.release_pool(self.probe_pool)


def run(bin_dir: str, sizes: tuple[int, int] = (10, 1000), rounds: int = 20, cycles_per_round: int = 10,
        networks_per_round: int = 2) -> dict:
    """Measures one build; returns per size the call figures and the ratios large/small."""
    small, large = sizes
    cleanup = Cleanup()  # stops the supervisors (and so their workers) whatever happens
    try:
        sides = {small: _Side(bin_dir, small, 200, cleanup, f"sizecost {small}"),
                 large: _Side(bin_dir, large, 100, cleanup, f"sizecost {large}")}
        for side in sides.values():  # warm up (first calls page in code, grow buffers)
            side.cycle()
            side.network()
        for side in sides.values():
            for values in side.calls.values():
                values.clear()
        for _ in range(rounds):
            for side in sides.values():  # small, large, small, large...
                for _ in range(cycles_per_round):
                    side.cycle()
                for _ in range(networks_per_round):
                    side.network()
        out: dict = {"bin_dir": bin_dir, "sizes": [small, large], "rounds": rounds,
                     "cycles_per_round": cycles_per_round, "networks_per_round": networks_per_round,
                     "loadavg": os.getloadavg()}
        for size, side in sides.items():
            out[str(size)] = {"build_s": side.build_s, "state_files": side.state_files(),
                              "calls": {name: _summary(v) for name, v in side.calls.items()}}
        out["ratio"] = {name: out[str(large)]["calls"][name]["median_ms"] / out[str(small)]["calls"][name]["median_ms"]
                        for name in out[str(small)]["calls"]}
        for side in sides.values():
            side.close()
        return out
    finally:
        cleanup.run_all()


def format_result(r: dict) -> str:
    small, large = r["sizes"]
    lines = [f"{r['bin_dir']}: load average {r['loadavg'][0]:.2f}",
             f"{'call':16} {small:>6} median/p90 ms {large:>6} median/p90 ms  ratio {large}/{small}"]
    for name in ("cycle", *CYCLE_CALLS, "network", "CreateNetwork", "DeleteNetwork"):
        a, b = r[str(small)]["calls"][name], r[str(large)]["calls"][name]
        lines.append(f"{name:16} {a['median_ms']:9.2f} / {a['p90_ms']:7.2f}   {b['median_ms']:9.2f} / "
                     f"{b['p90_ms']:7.2f}   {r['ratio'][name]:6.2f}")
    for size in (small, large):
        lines.append(f"state dir at {size}: {r[str(size)]['state_files']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/lib/sizecost.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", action="append", required=True,
                    help="a build's binary directory; give it twice (before, after) to alternate two builds")
    ap.add_argument("--sizes", default="10,1000")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1, help="measure each build this many times, alternating")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (Join makes taps)", file=sys.stderr)
        return 2

    sizes = tuple(int(s) for s in args.sizes.split(","))
    results = []
    for _ in range(args.repeat):
        for bin_dir in args.bin_dir:  # A B A B
            r = run(os.path.abspath(bin_dir), sizes, args.rounds)
            print(format_result(r), flush=True)
            results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    stop_like_ctrl_c()
    sys.exit(main())
