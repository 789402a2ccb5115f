"""Scale: many networks with two containers each, and one network with many containers.
Time to build and to tear down, memory (PSS) per process kind, process count, and a check
that teardown leaves nothing behind. Also the same memory figures without Docker, straight
over a private plugin socket, for the dynamic and the --static-swift-stdlib builds."""

from __future__ import annotations

import os
import secrets
import time

from common import (DOCKER, IMAGE, LABEL, Cleanup, Supervisor, cpu_seconds, log, memory_breakdown, plugin_taps,
                    processes_under, run, stats, timed)


def idle_cpu(procs, seconds: float) -> dict:
    """CPU time our processes use while nothing happens (timers, health checks), in % of one CPU."""
    before = {pid: cpu_seconds(pid) for pid in procs}
    time.sleep(seconds)
    by_kind: dict[str, float] = {}
    for pid, (kind, _) in procs.items():
        by_kind[kind] = by_kind.get(kind, 0.0) + 100 * (cpu_seconds(pid) - before[pid]) / seconds
    return {"seconds": seconds, "pct_of_one_cpu": by_kind, "total_pct": sum(by_kind.values())}
from plugin_client import PluginClient
import smaps_profile


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


def _leftover_check(sup: Supervisor | None, taps_before: set[str], tap_names: set[str]) -> dict:
    taps_now = plugin_taps()
    out = {"new_vde_taps": sorted(taps_now - taps_before), "our_taps_present": sorted(taps_now & tap_names)}
    if sup:
        out |= sup.leftovers()
        out["processes"] = [p for p in out["processes"]]  # already only ours
    out["clean"] = not out["new_vde_taps"] and not out["our_taps_present"] and \
        not out.get("processes") and not out.get("run_dir_entries")
    return out


def docker_scale(driver: str, networks: int, per_network: int, sup: Supervisor | None, cleanup: Cleanup,
                 octet: int) -> dict:
    """Builds `networks` networks of `driver` with `per_network` containers each, measures,
    tears down. `sup` is the supervisor serving the vde driver (None for bridge)."""
    tag = f"vdeb-sc-{driver}-{networks}x{per_network}"
    taps_before = plugin_taps()
    net_names, ctr_names = [], []
    net_times, ctr_times = [], []

    def rm_all():
        if ctr_names:
            run([DOCKER, "rm", "-f", *ctr_names], check=False, timeout=900)
        if net_names:
            run([DOCKER, "network", "rm", *net_names], check=False, timeout=900)

    cleanup.push(f"scale {tag}", rm_all)
    t_build = time.perf_counter()
    for i in range(networks):
        name = f"{tag}-n{i}"
        subnet = f"10.{octet}.{i}.0/24" if networks > 1 else f"10.{octet}.0.0/16"
        dt, _ = timed([DOCKER, "network", "create", "-d", driver, "--subnet", subnet, "--label", LABEL, name])
        net_names.append(name)
        net_times.append(dt)
    t_nets = time.perf_counter() - t_build
    for i, net in enumerate(net_names):
        for j in range(per_network):
            cname = f"{net}-c{j}"
            dt, _ = timed([DOCKER, "run", "-d", "--name", cname, "--label", LABEL, "--net", net, IMAGE, "sleep", "3600"])
            ctr_names.append(cname)
            ctr_times.append(dt)
    build_s = time.perf_counter() - t_build
    out = {"driver": driver, "networks": networks, "containers_per_network": per_network,
           "build_s": build_s, "networks_build_s": t_nets, "containers_build_s": build_s - t_nets,
           "network_create_s": stats(net_times), "container_run_s": stats(ctr_times)}

    tap_names: set[str] = set()
    if sup:
        time.sleep(2)  # let every worker settle (first probes, logs)
        procs = sup.our_processes()
        out["memory"] = _summarise_memory(procs, networks)
        out["idle_cpu"] = idle_cpu(procs, 10)
        # The taps the plugin made: `vde` + 12 characters of each endpoint ID.
        for net in net_names:
            eps = run([DOCKER, "network", "inspect", "-f", "{{range .Containers}}{{.EndpointID}} {{end}}", net]).stdout.split()
            tap_names |= {"vde" + e[:12] for e in eps}
        out["endpoints_seen"] = len(tap_names)
        # A data check: the first network's containers reach each other.
        first = run([DOCKER, "network", "inspect", "-f", "{{range .Containers}}{{.IPv4Address}} {{end}}", net_names[0]]).stdout.split()
        peer = first[1].split("/")[0] if len(first) > 1 else None
        if peer:
            r = run([DOCKER, "exec", f"{net_names[0]}-c0", "ping", "-c", "1", "-W", "2", peer], check=False)
            out["first_network_ping_ok"] = r.returncode == 0

    t0 = time.perf_counter()
    run([DOCKER, "rm", "-f", *ctr_names], timeout=900)
    out["containers_rm_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    run([DOCKER, "network", "rm", *net_names], timeout=900)
    out["networks_rm_s"] = time.perf_counter() - t1
    out["teardown_s"] = time.perf_counter() - t0
    ctr_names.clear()
    net_names.clear()
    cleanup.actions = [a for a in cleanup.actions if a[0] != f"scale {tag}"]
    if sup:
        time.sleep(0.5)
        out["leftovers"] = _leftover_check(sup, taps_before, tap_names)
        out["supervisor_alive_after"] = sup.proc.poll() is None
    return out


def socket_scale(bin_dir: str, variant: str, networks: int, per_network: int, cleanup: Cleanup,
                 results_dir: str, env: dict | None = None) -> dict:
    """The same build over a private plugin socket, without Docker: endpoints are created and
    joined (their taps stay in the host netns) exactly as dockerd would call."""
    sup = Supervisor(bin_dir, env=env)
    cleanup.push(f"supervisor {variant}", lambda: (sup.stop(), sup.remove_workdir()))
    sup.start()
    taps_before = plugin_taps()
    sandbox = os.path.join(sup.workdir, "fake-sandbox")
    open(sandbox, "w").close()
    nets: list[tuple[str, str, list[tuple[str, str]]]] = []
    tap_names = set()
    with PluginClient(sup.socket_path) as c:
        c.call("/Plugin.Activate")
        idle = _summarise_memory(sup.our_processes(), 1)
        t0 = time.perf_counter()
        for i in range(networks):
            subnet = f"10.236.{i}.0/24"
            pool = c.call("/IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": subnet})
            nid = secrets.token_hex(32)
            c.call("/NetworkDriver.CreateNetwork", {"NetworkID": nid, "Options": {}, "IPv4Data": [
                {"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": f"10.236.{i}.1/24"}]})
            eps = []
            for _ in range(per_network):
                eid = secrets.token_hex(32)
                addr = c.call("/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "", "Options": {}})
                c.call("/NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid,
                       "Interface": {"Address": addr["Address"], "AddressIPv6": "", "MacAddress": ""}, "Options": {}})
                c.call("/NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid, "SandboxKey": sandbox, "Options": {}})
                eps.append((eid, addr["Address"].split("/")[0]))
                tap_names.add("vde" + eid[:12])
            nets.append((nid, pool["PoolID"], eps))
        build_s = time.perf_counter() - t0
        time.sleep(2)
        procs = sup.our_processes()
        mem = _summarise_memory(procs, networks)
        # Where a worker's and the supervisor's PSS goes (the profile behind the figures).
        workers = sorted(pid for pid, (kind, _) in procs.items() if kind == "vde-networker")
        mem["profile_worker"] = smaps_profile.profile(workers[0]) if workers else None
        mem["profile_supervisor"] = smaps_profile.profile(sup.pid())
        mem["idle_cpu"] = idle_cpu(procs, 10)
        mem["threads"] = {kind: sorted(len(os.listdir(f"/proc/{pid}/task")) for pid, (k, _) in procs.items() if k == kind)
                          for kind in ("vde-supervisor", "vde-networker")}
        t1 = time.perf_counter()
        for nid, pool_id, eps in nets:
            for eid, addr in eps:
                c.call("/NetworkDriver.Leave", {"NetworkID": nid, "EndpointID": eid})
                c.call("/NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
                c.call("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": addr})
            c.call("/NetworkDriver.DeleteNetwork", {"NetworkID": nid})
            c.call("/IpamDriver.ReleasePool", {"PoolID": pool_id})
        teardown_s = time.perf_counter() - t1
    time.sleep(0.5)
    leftovers = _leftover_check(sup, taps_before, tap_names)
    sup_pss_after = memory_breakdown({sup.pid(): ("vde-supervisor", [])}).get("vde-supervisor", {}).get("pss_kb")
    stop_s = sup.stop()
    sup.remove_workdir(keep_log_to=os.path.join(results_dir, f"supervisor-scale-{variant}.log"))
    cleanup.actions = [a for a in cleanup.actions if a[0] != f"supervisor {variant}"]
    return {"variant": variant, "env": env or {}, "networks": networks, "endpoints_per_network": per_network,
            "build_s": build_s, "teardown_s": teardown_s, "supervisor_stop_s": stop_s,
            "idle_supervisor_pss_kb": idle["pss_total_kb"], "supervisor_pss_after_teardown_kb": sup_pss_after,
            "memory": mem, "leftovers": leftovers}
