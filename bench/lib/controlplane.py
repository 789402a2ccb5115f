"""Control plane: docker network create/rm and docker run on vde vs bridge (interleaved
A B A B ...), and endpoint cycles straight over the plugin socket of a private supervisor."""

from __future__ import annotations

import os
import secrets
import time

from common import DOCKER, IMAGE, LABEL, Cleanup, Supervisor, ratio, run, stats, timed
from plugin_client import PluginClient


def _rm_network(name: str) -> None:
    run([DOCKER, "network", "rm", name], check=False)


def docker_network_cycles(iterations: int, cleanup: Cleanup) -> dict:
    """`docker network create` + `docker network rm`, interleaved over three kinds."""
    kinds = {
        "vde": ["-d", "vde"],
        "vde_ipam": ["-d", "vde", "--ipam-driver", "vde"],
        "bridge": ["-d", "bridge"],
    }
    times = {k: {"create": [], "rm": [], "total": []} for k in kinds}
    # One warm-up of each: the first call to a plugin includes dockerd's plugin discovery.
    for i in range(iterations + 1):
        for j, (kind, args) in enumerate(kinds.items()):
            name = f"vdeb-cp-{kind}-{i}"
            subnet = f"10.231.{(i * 3 + j) % 250}.0/24"
            cleanup.push(f"network {name}", lambda n=name: _rm_network(n))
            t_create, _ = timed([DOCKER, "network", "create", *args, "--subnet", subnet, "--label", LABEL, name])
            t_rm, _ = timed([DOCKER, "network", "rm", name])
            cleanup.actions.pop()
            if i == 0:
                continue
            times[kind]["create"].append(t_create)
            times[kind]["rm"].append(t_rm)
            times[kind]["total"].append(t_create + t_rm)
    out = {k: {m: stats(v) | {"samples": v} for m, v in d.items()} for k, d in times.items()}
    out["ratio_vde_over_bridge"] = {m: ratio(out["vde"][m], out["bridge"][m]) for m in ("create", "rm", "total")}
    out["ratio_vde_ipam_over_bridge"] = {m: ratio(out["vde_ipam"][m], out["bridge"][m]) for m in ("create", "rm", "total")}
    return out


def docker_run_cycles(iterations: int, cleanup: Cleanup) -> dict:
    """`docker run --rm --net NET IMAGE true` on a vde network vs a bridge network."""
    nets = {"vde": ("vdeb-run-vde", ["-d", "vde"], "10.232.1.0/24"),
            "bridge": ("vdeb-run-br", ["-d", "bridge"], "10.232.2.0/24")}
    for kind, (name, args, subnet) in nets.items():
        run([DOCKER, "network", "create", *args, "--subnet", subnet, "--label", LABEL, name])
        cleanup.push(f"network {name}", lambda n=name: _rm_network(n))
    times = {k: [] for k in nets}
    try:
        for i in range(iterations + 1):
            for kind, (name, _, _) in nets.items():
                dt, _ = timed([DOCKER, "run", "--rm", "--label", LABEL, "--net", name, IMAGE, "true"])
                if i > 0:
                    times[kind].append(dt)
    finally:
        for kind, (name, _, _) in nets.items():
            _rm_network(name)
        cleanup.actions = [a for a in cleanup.actions if not a[0].startswith("network vdeb-run-")]
    out = {k: stats(v) | {"samples": v} for k, v in times.items()}
    out["ratio_vde_over_bridge"] = ratio(out["vde"], out["bridge"])
    return out


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

