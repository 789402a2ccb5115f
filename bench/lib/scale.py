"""Scale: many networks with two containers each, and one network with many containers.
Time to build and to tear down, memory (PSS) per process kind, process count, and a check
that teardown leaves nothing behind. Also the same memory figures without Docker, straight
over a private plugin socket, for the dynamic and the --static-swift-stdlib builds."""

from __future__ import annotations

import os
import time

import idle
import procfs
import smaps_profile
from common import Cleanup, Supervisor, memory_breakdown
from lab import DockerLab, SocketLab, leftover_check
from plugin_client import PluginClient


def _summarise_memory(procs, networks: int) -> dict:
    kinds = memory_breakdown(procs)
    total_all = sum(k["pss_kb"] for k in kinds.values())
    total_net = sum(k["pss_kb"] for name, k in kinds.items() if name != "vde-supervisor")
    return {
        "kinds": kinds,
        "process_count": sum(k["count"] for k in kinds.values()),
        "pss_total_kb": total_all,
        "pss_per_network_kb": total_net / networks if networks else None,  # worker + switch + plugs
        "pss_per_network_with_supervisor_kb": total_all / networks if networks else None,
    }


def docker_scale(driver: str, networks: int, per_network: int, sup: Supervisor | None, cleanup: Cleanup,
                 octet: int) -> dict:
    """Builds `networks` networks of `driver` with `per_network` containers each, measures,
    tears down. `sup` is the supervisor serving the vde driver (None for bridge)."""
    lab = DockerLab(driver, networks, per_network, octet, cleanup)
    out = lab.build()
    tap_names: set[str] = set()
    if sup:
        time.sleep(2)  # let every worker settle (first probes, logs)
        procs = sup.our_processes()
        out["memory"] = _summarise_memory(procs, networks)
        out["idle_cpu"] = idle.measure(procs, 10)
        tap_names = lab.endpoint_taps()
        out["endpoints_seen"] = len(tap_names)
        out["first_network_ping_ok"] = lab.ping_check(0)  # the first network's containers reach each other
    out |= lab.teardown()
    if sup:
        time.sleep(0.5)
        out["leftovers"] = leftover_check(sup, lab.taps_before, tap_names)
        out["supervisor_alive_after"] = sup.proc.poll() is None
    return out


def socket_scale(bin_dir: str, variant: str, networks: int, per_network: int, cleanup: Cleanup,
                 results_dir: str, env: dict | None = None) -> dict:
    """The same build over a private plugin socket, without Docker: endpoints are created and
    joined (their taps stay in the host netns) exactly as dockerd would call."""
    sup = Supervisor(bin_dir, env=env)
    cleanup.push(f"supervisor {variant}", lambda: (sup.stop(), sup.remove_workdir()))
    sup.start()
    lab = SocketLab(sup, networks, per_network)
    with PluginClient(sup.socket_path) as c:
        c.call("/Plugin.Activate")
        idle_memory = _summarise_memory(sup.our_processes(), 1)
        build_s = lab.build(c)
        time.sleep(2)
        procs = sup.our_processes()
        mem = _summarise_memory(procs, networks)
        # Where a worker's and the supervisor's PSS goes (the profile behind the figures).
        workers = sorted(pid for pid, (kind, _) in procs.items() if kind == "vde-networker")
        mem["profile_worker"] = smaps_profile.profile(workers[0]) if workers else None
        mem["profile_supervisor"] = smaps_profile.profile(sup.pid())
        mem["idle_cpu"] = idle.measure(procs, 10)
        mem["threads"] = {kind: sorted(len(procfs.threads(pid)) for pid, (k, _) in procs.items() if k == kind)
                          for kind in ("vde-supervisor", "vde-networker")}
        teardown_s = lab.teardown(c)
    time.sleep(0.5)
    leftovers = leftover_check(sup, lab.taps_before, lab.tap_names)
    sup_pss_after = memory_breakdown({sup.pid(): ("vde-supervisor", [])}).get("vde-supervisor", {}).get("pss_kb")
    stop_s = sup.stop()
    sup.remove_workdir(keep_log_to=os.path.join(results_dir, f"supervisor-scale-{variant}.log"))
    cleanup.actions = [a for a in cleanup.actions if a[0] != f"supervisor {variant}"]
    return {"variant": variant, "env": env or {}, "networks": networks, "endpoints_per_network": per_network,
            "build_s": build_s, "teardown_s": teardown_s, "supervisor_stop_s": stop_s,
            "idle_supervisor_pss_kb": idle_memory["pss_total_kb"], "supervisor_pss_after_teardown_kb": sup_pss_after,
            "memory": mem, "leftovers": leftovers}
