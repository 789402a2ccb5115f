"""The benchmark driver that bench/run starts. Results: bench/results/<stamp>.json and
bench/results/latest.json; `--update-docs` also rewrites the generated part of
docs/benchmarks.md and its plots in docs/img/."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capture  # noqa: E402
import controlplane  # noqa: E402
import dataplane  # noqa: E402
import idle  # noqa: E402
import links  # noqa: E402
import multihost  # noqa: E402
import report  # noqa: E402
import scale  # noqa: E402
from common import (DOCKER, LABEL, REAL_SOCKET, Cleanup, Supervisor, log, machine_info, real_socket_lock,  # noqa: E402
                    run, stop_like_ctrl_c, write_json)

SECTIONS = ["control", "data", "scale", "memory", "idle", "links", "capture", "multihost"]


def stale_cleanup() -> None:
    """Removes what an interrupted earlier run of ours may have left: labelled containers and
    networks, our netns (all named vdeb-*), our hand-made taps."""
    ids = run([DOCKER, "ps", "-aq", "--filter", f"label={LABEL}"], check=False).stdout.split()
    if ids:
        log(f"removing {len(ids)} container(s) left by an earlier run")
        run([DOCKER, "rm", "-f", *ids], check=False, timeout=900)
    nets = run([DOCKER, "network", "ls", "-q", "--filter", f"label={LABEL}"], check=False).stdout.split()
    if nets:
        log(f"removing {len(nets)} network(s) left by an earlier run")
        r = run([DOCKER, "network", "rm", *nets], check=False, timeout=900)
        if r.returncode != 0:
            log(f"some could not be removed (a vde network needs the plugin running): {r.stderr.strip()[:300]}")
    for ns in run(["ip", "netns", "list"], check=False).stdout.split("\n"):
        name = ns.split(" ")[0]
        if name.startswith("vdeb-"):
            run(["ip", "netns", "del", name], check=False)
    for tap in ("vdebhva", "vdebhvb"):
        run(["ip", "link", "del", tap], check=False)
    multihost.stale_cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/run")
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs (a few minutes)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--bin-dir", required=True, help="release binaries used against Docker (static build)")
    ap.add_argument("--bin-dir-dynamic", help="release binaries linked against the dynamic Swift runtime")
    ap.add_argument("--results", required=True)
    ap.add_argument("--update-docs", action="store_true", help="rewrite the generated part of docs/benchmarks.md")
    ap.add_argument("--no-bridge-scale", action="store_true", help="skip the Docker bridge reference at scale")
    ap.add_argument("--idle-networks", type=int, help="networks (two containers each) of the idle-CPU measure "
                    "(default 100, --quick 10)")
    ap.add_argument("--idle-seconds", type=float, help="quiet window of the idle-CPU measure (default 60, --quick 15)")
    ap.add_argument("--scale", type=int, metavar="N",
                    help="only the scale-at-N section (issue 17): N vde networks of one container (the last N/10 "
                         "of two) through dockerd at sizes 10, 100 and N against bridge, and a supervisor restart "
                         "with N networks over a private socket and through Docker")
    ap.add_argument("--scale-idle-seconds", type=float, default=15, help="idle-CPU window per size of --scale")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: rebuild the summary, plots (and with --update-docs the docs) from "
                         "latest.json (latest-quick.json with --quick), with recovery.json as it is now")
    args = ap.parse_args()
    if args.report_only:
        return report_only(args)
    only = {"scale_n"} if args.scale else set(args.only.split(","))
    unknown = only - set(SECTIONS) - {"scale_n"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    os.makedirs(args.results, exist_ok=True)

    stop_like_ctrl_c()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict = {"stamp": stamp, "quick": args.quick, "sections": sorted(only), "machine": machine_info(),
                     "binaries": {"docker": args.bin_dir, "dynamic": args.bin_dir_dynamic}}
    results["loadavg"] = {"start": os.getloadavg()}
    cleanup = Cleanup()
    started = time.perf_counter()
    failed = False
    try:
        stale_cleanup()
        if "control" in only:
            log("control plane: endpoint cycles over a private plugin socket")
            results["socket_cycles"] = controlplane.socket_endpoint_cycles(
                args.bin_dir, 5 if args.quick else 20, cleanup, args.results)
        if "memory" in only:
            n = 10 if args.quick else 100
            variants = [("static", args.bin_dir)] + ([("dynamic", args.bin_dir_dynamic)] if args.bin_dir_dynamic else [])
            results["socket_scale"] = {}
            for variant, bin_dir in variants:
                log(f"memory: {n} networks x 2 endpoints over a private socket ({variant} Swift runtime)")
                results["socket_scale"][variant] = scale.socket_scale(bin_dir, variant, n, 2, cleanup, args.results)
        if "scale_n" in only:
            n = args.scale
            log(f"scale: restart with {n} networks over a private socket (no Docker)")
            results["restart_at_scale"] = scale.restart_at_scale(args.bin_dir, n, 1, cleanup, args.results)
            sizes = sorted({s for s in (10, 100, n) if s <= n})
            log(f"scale: {sizes} networks through dockerd, vde and bridge interleaved")
            results["scale_n"] = scale.scale_docker(args.bin_dir, sizes, cleanup, args.results,
                                                    args.scale_idle_seconds, not args.no_bridge_scale)
        if "multihost" in only:
            # Simulated hosts in namespaces, a private supervisor each: no Docker.
            log("multihost: uplinks between simulated hosts (issue 16)")
            try:
                results["multihost"] = multihost.run_multihost(args.bin_dir, args.quick, cleanup)
            finally:
                cleanup.run_all()

        if "control" in only:
            # Its own supervisor at its default level (info) for the ratios and a shorter pass at
            # debug for the per-call table, the floor plugin and bridge; it takes the plugin lock
            # itself, so it runs before the block below.
            cp = controlplane.run_against_floor(args.bin_dir, 5 if args.quick else 20, cleanup, args.results,
                                                table_rounds=3 if args.quick else 10)
            results["network_create_rm"] = cp["network_create_rm"]
            results["docker_run"] = cp["docker_run"]
            results["control_calls"] = cp.get("calls")
            results["control_steps"] = cp.get("network_steps")

        docker_parts = only & {"data", "scale", "idle", "links", "capture"}
        if docker_parts:
            with real_socket_lock():
                sup = Supervisor(args.bin_dir, socket_path=REAL_SOCKET)
                # Docker objects go while the plugin still answers: a separate undo list.
                dcleanup = Cleanup()
                log(f"starting vde-supervisor on {REAL_SOCKET} (holding the plugin lock)")
                results["loadavg"]["docker_phase"] = os.getloadavg()
                try:
                    sup.start()
                    if "data" in only:
                        try:
                            results["dataplane"] = dataplane.run_dataplane(args.quick, dcleanup, sup.run_dir, True)
                        finally:
                            dcleanup.run_all()
                    if "links" in only:
                        try:
                            results["links"] = {}
                            if "data" not in only:
                                # The references for the cost of an unimpaired endpoint, in this run.
                                results["links"]["dataplane"] = dataplane.run_dataplane(
                                    args.quick, dcleanup, sup.run_dir, True, reps=1 if args.quick else 2,
                                    seconds=3 if args.quick else 5, pings=10 if args.quick else 20)
                                dcleanup.run_all()
                            results["links"] |= links.run_links(links.PluginPairs(dcleanup, sup), args.quick)
                        finally:
                            dcleanup.run_all()
                    if "capture" in only:
                        try:
                            results["capture"] = capture.run_capture(args.quick, dcleanup, sup)
                        finally:
                            dcleanup.run_all()
                    if "scale" in only:
                        shapes = [(10, 2), (1, 8)] if args.quick else [(100, 2), (1, 30)]
                        results["scale"] = {}
                        for nets, per in shapes:
                            log(f"scale: {nets} vde network(s) x {per} containers")
                            results["scale"][f"vde_{nets}x{per}"] = scale.docker_scale("vde", nets, per, sup, dcleanup, 237)
                    if "idle" in only:
                        n = args.idle_networks or (10 if args.quick else 100)
                        secs = args.idle_seconds or (15 if args.quick else 60)
                        results["idle"] = idle.docker_idle(n, 2, secs, sup, dcleanup)
                    results["socket_still_ours"] = sup.socket_is_ours()
                    results["supervisor_stop_s"] = sup.stop()
                    results["supervisor_stop_timed_out"] = getattr(sup, "stop_timed_out", False)
                    results["supervisor_leftovers"] = sup.leftovers()
                finally:
                    dcleanup.run_all()
                    stale_cleanup()  # labelled leftovers, while the plugin still answers
                    sup.stop()
                    sup.remove_workdir(keep_log_to=os.path.join(args.results, "supervisor-docker.log"))
            if "scale" in only and not args.no_bridge_scale:
                shapes = [(10, 2), (1, 8)] if args.quick else [(100, 2), (1, 30)]
                for nets, per in shapes:
                    log(f"scale: {nets} Docker bridge network(s) x {per} containers (reference)")
                    results["scale"][f"bridge_{nets}x{per}"] = scale.docker_scale("bridge", nets, per, None, cleanup, 238)

        results["recovery"] = load_recovery(args.results)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        failed = True
    except Exception as e:  # noqa: BLE001
        log(f"FAILED: {type(e).__name__}: {e}")
        if "no vde network" in str(e):
            log("hint: the plugin did not know a network it had created: was /run/docker/plugins/vde.sock "
                "replaced by another supervisor (someone not taking /run/vde-docker-plugin.lock)?")
        results["error"] = f"{type(e).__name__}: {e}"
        failed = True
        import traceback
        traceback.print_exc()
    finally:
        cleanup.run_all()
        with contextlib.suppress(Exception):
            stale_cleanup()
    results["wall_s"] = time.perf_counter() - started
    results["loadavg"]["end"] = os.getloadavg()
    # A --scale run measures one section only: it keeps its own latest file, so that the full
    # run's latest.json (which the docs are made from) stays whole.
    kind = f"-scale{args.scale}" if args.scale else "-quick" if args.quick else ""
    out = os.path.join(args.results, f"{stamp}{kind}.json")
    write_json(out, results)
    if not failed:
        latest = "latest-scale.json" if args.scale else "latest-quick.json" if args.quick else "latest.json"
        write_json(os.path.join(args.results, latest), results)
    log(f"results: {out}")
    report.print_summary(results)
    with contextlib.suppress(Exception):
        for p in report.plots(results, args.results):
            log(f"plot: {p}")
    if args.update_docs and not failed and not args.scale:
        report.update_docs(results)
    return 1 if failed else 0


def load_recovery(results_dir: str):
    """What bench/recovery last wrote, or None."""
    rec = os.path.join(results_dir, "recovery.json")
    if not os.path.exists(rec):
        return None
    with open(rec) as f:
        return json.load(f)


def report_only(args) -> int:
    latest = os.path.join(args.results, "latest-quick.json" if args.quick else "latest.json")
    if not os.path.exists(latest):
        log(f"no {latest}: run the benchmark first")
        return 1
    with open(latest) as f:
        results = json.load(f)
    results["recovery"] = load_recovery(args.results)
    write_json(latest, results)
    report.print_summary(results)
    for p in report.plots(results, args.results):
        log(f"plot: {p}")
    if args.update_docs:
        report.update_docs(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
