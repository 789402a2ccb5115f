"""Turns a results dict into tables (stdout, and the generated part of docs/benchmarks.md)
and plots (PNG, matplotlib)."""

from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
IMG = os.path.join(REPO, "docs", "img")
BEGIN, END = "<!-- bench:generated:begin -->", "<!-- bench:generated:end -->"
MIB = 1024.0


def _f(x, digits=2, unit=""):
    if x is None:
        return "–"
    return f"{x:.{digits}f}{unit}"


def _mmm(s: dict, scale=1.0, digits=2) -> str:
    if not s or not s.get("n"):
        return "–"
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f})"


def tables(r: dict) -> str:
    out: list[str] = []
    m = r.get("machine", {})
    out.append(f"Run `{r.get('stamp')}`{' (--quick)' if r.get('quick') else ''}, commit `{m.get('git', '?')}`, "
               f"{m.get('cpus')} × {m.get('cpu', '?')}, {m.get('mem_gib')} GiB, kernel {m.get('kernel')}, "
               f"{m.get('os')}, dockerd {m.get('dockerd')}, vde2 {m.get('vde2')}, {m.get('iperf3')}, "
               f"{m.get('swift')}. Wall time {r.get('wall_s', 0) / 60:.1f} min. Load average (1 min) at start "
               f"{_f((r.get('loadavg') or {}).get('start', [None])[0], 1)}, Docker phase "
               f"{_f((r.get('loadavg') or {}).get('docker_phase', [None])[0], 1)}, end "
               f"{_f((r.get('loadavg') or {}).get('end', [None])[0], 1)}.")
    out.append("")
    out.append("Cells are median (min–max). Ratios are vde / reference, medians.")
    out.append("")

    ncr = r.get("network_create_rm")
    if ncr:
        n = ncr["vde"]["create"]["n"]
        out.append(f"### `docker network create` + `docker network rm` ({n} interleaved rounds, seconds)")
        out.append("")
        out.append("| driver | create | rm | create + rm |")
        out.append("|---|---|---|---|")
        kinds = [("vde", "vde (Docker IPAM)"), ("vde_ipam", "vde (`--ipam-driver vde`)"), ("bridge", "bridge")]
        if "floor" in ncr:  # the do-nothing plugin of bench/lib/floor_plugin.py
            kinds[2:2] = [("floor", "floor plugin (Docker IPAM)"), ("floor_ipam", "floor plugin (its own IPAM)")]
        for k, label in kinds:
            d = ncr[k]
            out.append(f"| {label} | {_mmm(d['create'], digits=3)} | {_mmm(d['rm'], digits=3)} | {_mmm(d['total'], digits=3)} |")
        rv = ncr["ratio_vde_over_bridge"]
        ri = ncr["ratio_vde_ipam_over_bridge"]
        out.append(f"| ratio vde / bridge | {_f(rv['create'])} | {_f(rv['rm'])} | {_f(rv['total'])} |")
        out.append(f"| ratio vde IPAM / bridge | {_f(ri['create'])} | {_f(ri['rm'])} | {_f(ri['total'])} |")
        for key, label in (("ratio_vde_over_floor", "ratio vde / floor"),
                           ("ratio_vde_ipam_over_floor_ipam", "ratio vde IPAM / floor IPAM")):
            if key in ncr:
                rf = ncr[key]
                out.append(f"| {label} | {_f(rf['create'])} | {_f(rf['rm'])} | {_f(rf['total'])} |")
        out.append("")

    dr = r.get("docker_run")
    if dr:
        out.append(f"### `docker run --rm --net NET vde-test-busybox true` ({dr['vde']['n']} interleaved rounds, seconds)")
        out.append("")
        out.append("| network | time |")
        out.append("|---|---|")
        out.append(f"| vde | {_mmm(dr['vde'], digits=3)} |")
        if "floor" in dr:
            out.append(f"| floor plugin | {_mmm(dr['floor'], digits=3)} |")
        out.append(f"| bridge | {_mmm(dr['bridge'], digits=3)} |")
        out.append(f"| ratio vde / bridge | {_f(dr['ratio_vde_over_bridge'], 3)} |")
        if "floor" in dr:
            out.append(f"| ratio vde / floor | {_f(dr['ratio_vde_over_floor'], 3)} |")
        out.append("")

    sc = r.get("socket_cycles")
    if sc:
        out.append(f"### Endpoint cycles straight over the plugin socket (private supervisor, no Docker, {sc['seconds']:.0f} s)")
        out.append("")
        out.append(f"**{sc['cycles_per_second']:.1f} cycles/s** ({sc['cycles']} cycles of RequestAddress, CreateEndpoint, "
                   f"Join, Leave, DeleteEndpoint, ReleaseAddress on one keep-alive connection; "
                   f"{sc['keepalive_reconnects']} reconnects).")
        out.append("")
        out.append("| call | ms |")
        out.append("|---|---|")
        for k, v in sc["call_ms"].items():
            out.append(f"| {k} | {_mmm(v)} |")
        out.append(f"| RequestPool + CreateNetwork | {_mmm(sc['network_create_ms'])} |")
        out.append(f"| DeleteNetwork + ReleasePool | {_mmm(sc['network_delete_ms'])} |")
        out.append("")

    dp = r.get("dataplane")
    if dp:
        out.append(f"### Data plane, container to container ({dp['reps']} interleaved rounds; iperf3 TCP "
                   f"{dp['iperf_seconds']} s each way; {dp['pings']} pings at 0.2 s)")
        out.append("")
        out.append("| path | TCP a→b Mbit/s | TCP b→a Mbit/s | ping avg RTT ms | CPU of switch + plugs during TCP |")
        out.append("|---|---|---|---|---|")
        labels = {"vde": "vde network (plugin)", "bridge": "Docker bridge network",
                  "vde_hand": "vde_switch + 2 × vde_plug2tap by hand, same netns", "kernel": "Linux bridge + veth (netns)"}
        for k, label in labels.items():
            p = dp["paths"].get(k)
            if not p:
                continue
            cpu = p.get("vde_cpu_pct_during_tcp")
            out.append(f"| {label} | {_mmm(p['tcp_fwd_mbit_s'], digits=0)} | {_mmm(p['tcp_rev_mbit_s'], digits=0)} | "
                       f"{_mmm(p['ping_avg_ms'], digits=3)} | {_f(cpu['median'], 0, ' %') if cpu else '–'} |")
        v, h = dp["paths"].get("vde"), dp["paths"].get("vde_hand")
        if v and h:
            out.append("")
            out.append(f"vde network / hand-started VDE: TCP a→b {_f(v['tcp_fwd_mbit_s']['median'] / h['tcp_fwd_mbit_s']['median'])}, "
                       f"b→a {_f(v['tcp_rev_mbit_s']['median'] / h['tcp_rev_mbit_s']['median'])}, "
                       f"RTT {_f(v['ping_avg_ms']['median'] / h['ping_avg_ms']['median'])}.")
        out.append("")

    ss = r.get("socket_scale")
    if ss:
        out.append("### Memory over a private plugin socket (no Docker): PSS by process kind")
        out.append("")
        out.append("| build | networks × endpoints | supervisor | workers (each) | switches (each) | plugs (each) | per network (worker + switch + plugs) | per network incl. supervisor | processes |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for variant, s in ss.items():
            out.append(_mem_row(variant, s["networks"], s["endpoints_per_network"], s["memory"]))
        out.append("")
        for variant, s in ss.items():
            out.append(f"- {variant}: build {s['build_s']:.1f} s, teardown {s['teardown_s']:.1f} s, idle supervisor "
                       f"{s['idle_supervisor_pss_kb'] / MIB:.2f} MiB PSS, after teardown "
                       f"{(s['supervisor_pss_after_teardown_kb'] or 0) / MIB:.2f} MiB; "
                       f"nothing left behind: {'yes' if s['leftovers']['clean'] else 'NO ' + str(s['leftovers'])}"
                       + _idle(s["memory"].get("idle_cpu")) + _threads(s["memory"].get("threads")) + ".")
        out.append("")

    sca = r.get("scale")
    if sca:
        out.append("### Scale with Docker")
        out.append("")
        out.append("| run | build s | networks s | containers s (per `docker run -d`) | teardown s (rm -f containers / network rm) | nothing left behind |")
        out.append("|---|---|---|---|---|---|")
        for key, s in sca.items():
            left = s.get("leftovers")
            clean = "–" if left is None else ("yes" if left["clean"] else "NO")
            out.append(f"| {s['driver']} {s['networks']} × {s['containers_per_network']} | {s['build_s']:.1f} | "
                       f"{s['networks_build_s']:.1f} | {s['containers_build_s']:.1f} ({_mmm(s['container_run_s'], digits=2)}) | "
                       f"{s['teardown_s']:.1f} ({s['containers_rm_s']:.1f} / {s['networks_rm_s']:.1f}) | {clean} |")
        out.append("")
        mem_rows = [(k, s) for k, s in sca.items() if s.get("memory")]
        if mem_rows:
            out.append("PSS by process kind with Docker (static build):")
            out.append("")
            out.append("| run | supervisor | workers (each) | switches (each) | plugs (each) | per network (worker + switch + plugs) | per network incl. supervisor | processes |")
            out.append("|---|---|---|---|---|---|---|---|")
            for k, s in mem_rows:
                out.append(_mem_row(None, s["networks"], s["containers_per_network"], s["memory"]))
            out.append("")
            for k, s in mem_rows:
                left = s["leftovers"]
                out.append(f"- {k}: {s.get('endpoints_seen')} endpoints; first network's containers ping each other: "
                           f"{s.get('first_network_ping_ok')}; after teardown: vde processes {len(left.get('processes', []))}, "
                           f"new vde taps {len(left['new_vde_taps'])}, run dir entries {len(left.get('run_dir_entries', []))}"
                           + _idle(s.get("idle_cpu")) + ".")
            out.append("")

    idle_run = r.get("idle")
    if idle_run:
        out.append(idle_table(idle_run))
    lk = r.get("links")
    if lk and lk.get("accuracy"):
        import links  # local import: links imports common, which report does not need otherwise
        out.append("### Links (issue 13): configured vs measured, and what shaping costs")
        out.append("")
        out.append(links.tables(lk, r.get("dataplane") or lk.get("dataplane")))
        out.append("")
        out.append("")

    cap = r.get("capture")
    if cap and cap.get("paths"):
        import capture  # local import, as links above
        out.append("### Capture (issue 14): what looking at the wire costs")
        out.append("")
        out.append(capture.tables(cap))
        out.append("")

    mh = r.get("multihost")
    if mh and mh.get("pairs"):
        import multihost  # local import, as links above
        out.append("### Multi-host (issue 16): uplinks between simulated hosts")
        out.append("")
        out.append(multihost.tables(mh))
        out.append("")

    if r.get("scale_n") or r.get("restart_at_scale"):
        out.append(scale_n_table(r))
        out.append("")

    rec = r.get("recovery")
    out.append("### Recovery")
    out.append("")
    if rec:
        out.append(_recovery_table(rec))
    else:
        out.append("`bench/results/recovery.json` did not exist when this run finished (it is written by "
                   "`bench/recovery`), so there are no recovery figures in this run.")
    out.append("")
    return "\n".join(out)


def scale_n_table(r: dict) -> str:
    """`bench/run --scale N` (issue 17): per size, vde against bridge, then the restarts."""
    out = []
    sc = r.get("scale_n")
    if sc:
        out += ["### Scale: N networks through dockerd, one container each (the last N/10 two), vde vs bridge", "",
                "| networks | build ms/network vde | bridge | ratio | teardown ms/network vde | bridge | "
                "PSS/network KiB (plugin) | supervisor PSS growth KiB/network | idle % CPU vde (plugin) | bridge | "
                "last pings | middle isolated (vde/bridge) | nothing left |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, x in sc.get("summary", {}).items():
            out.append(
                f"| {n} | {_f(x['vde_ms_per_network'], 0)} | {_f(x['bridge_ms_per_network'], 0)} | "
                f"{_f(x.get('build_ratio_vde_over_bridge'))} | {_f(x['vde_teardown_ms_per_network'], 0)} | "
                f"{_f(x['bridge_teardown_ms_per_network'], 0)} | {_f(x['plugin_pss_per_network_kb'], 0)} | "
                f"{_f(x['supervisor_pss_growth_per_network_kb'], 1)} | {_f(x['vde_idle_total_pct'])} "
                f"({_f(x['vde_idle_plugin_pct'])}) | {_f(x['bridge_idle_total_pct'])} | {x['ping_ok']} | "
                f"{x['isolated']}/{x['bridge_isolated']} | {x['clean']} |")
        out.append("")
    rows = []
    ras = r.get("restart_at_scale")
    for label, rounds in ((f"private socket, {ras['networks']} networks" if ras else "", (ras or {}).get("rounds", [])),
                          *((f"through dockerd, {n} networks", (sc or {}).get(f"vde_{n}", {}).get("restart") or [])
                            for n in (sc or {}).get("sizes", []))):
        for x in rounds:
            rows.append(f"| {label} | {x['how']} | {_f(x['control_first_answer_s'])} | {_f(x['all_running_s'])} | "
                        f"{_f(x['plugin_socket_s'])} | {_mmm(x['status_latency_s'], 1000, 0)} | "
                        f"{x['status_polls_during_restore']} | {x['workers_same_pid']}/{x['networks']} |")
    if rows:
        out += ["### Restart at scale (target: every network adopted within 10 s, status answering meanwhile)", "",
                "| where | how | control socket answers s | all running s | plugin socket s | status latency ms | "
                "status replies before the plugin socket | adopted (same worker pid) |",
                "|---|---|---|---|---|---|---|---|", *rows]
    return "\n".join(out)


IDLE_TARGET_PCT = 1.0  # issue 12: at most 1 % of one CPU at 100 idle networks with two containers each
PLUGIN_KINDS = ("vde-supervisor", "vde-networker", "vde-fork-server", "vde_switch", "vde_plug2tap")
DOCKER_KINDS = ("dockerd", "containerd", "containerd-shim")


def idle_table(d: dict) -> str:
    """The idle-CPU section: vde and bridge labs of the same size, per process kind."""
    n, per, secs = d["networks"], d["containers_per_network"], d["seconds"]
    out = [f"### Idle CPU: {n} networks × {per} containers, nothing happening ({secs:.0f} s of /proc utime + stime)", "",
           "CPU in % of one CPU (wakeups per second: context switches summed over threads). Docker's bridge driver "
           "runs inside dockerd, so the reference is Docker's whole stack for the same containers: dockerd, "
           "containerd and the containers' shims.", "",
           "| network | supervisor | workers | fork server | switches | plugs | plugin total | dockerd | containerd | shims | total |",
           "|---|" + "---|" * (len(PLUGIN_KINDS) + len(DOCKER_KINDS) + 2)]

    def cell(m, kind):
        k = m["kinds"].get(kind)
        if not k:
            return "–"
        return f"{k['pct_of_one_cpu']:.2f} ({k['wakeups_per_s']:.0f}/s)"

    for driver in ("vde", "bridge"):
        run = d.get(driver)
        if not run:
            continue
        m = run["idle"]
        plugin = f"**{m['plugin_pct']:.2f}** ({m['plugin_wakeups_per_s']:.0f}/s)" if driver == "vde" else "–"
        out.append(f"| {driver} | " + " | ".join(cell(m, k) if driver == "vde" else "–" for k in PLUGIN_KINDS) +
                   f" | {plugin} | " + " | ".join(cell(m, k) for k in DOCKER_KINDS) + f" | {m['total_pct']:.2f} |")
    v = d.get("vde")
    if v:
        m = v["idle"]
        verdict = ("met" if m["plugin_pct"] <= IDLE_TARGET_PCT else "NOT met") if n >= 100 else \
            f"it holds at 100 networks; this run has {n}"
        ratio_text = (f"; everything (plugin + Docker) vde / bridge: **{d['ratio_total_vde_over_bridge']:.2f}×**"
                      if d.get("ratio_total_vde_over_bridge") else "")
        left = v.get("leftovers")
        sc = v.get("syscalls_per_s")
        if sc:
            out += ["", "System calls per second while idle (`strace -c -f`, after the CPU window), the most frequent:", ""]
            for label, calls in sc.items():
                top = ", ".join(f"{c} {n:.1f}" for c, n in list(calls.items())[:8])
                out.append(f"- {label}{' (one of them)' if label == 'vde-networker' else ''}: "
                           f"{sum(calls.values()):.0f}/s: {top}")
        out += ["", f"The plugin at rest: **{m['plugin_pct']:.2f} % of one CPU** (target ≤ {IDLE_TARGET_PCT:g} %: "
                f"{verdict}){ratio_text}. First network's containers ping each other: {v.get('first_network_ping_ok')}; "
                f"processes gone during the window: {len(m.get('gone', []))}; nothing left behind: "
                f"{'–' if left is None else ('yes' if left['clean'] else 'NO')}. Load average at the start of the "
                f"vde window {m['loadavg'][0]:.1f}."]
    return "\n".join(out)


def _idle(cpu) -> str:
    if not cpu:
        return ""
    if "kinds" in cpu:  # idle.measure
        kinds = ", ".join(f"{k} {v['pct_of_one_cpu']:.1f} %" for k, v in sorted(cpu["kinds"].items()))
    else:  # results written before idle.measure
        kinds = ", ".join(f"{k} {v:.1f} %" for k, v in sorted(cpu["pct_of_one_cpu"].items()))
    return f"; idle CPU over {cpu['seconds']:.0f} s: {cpu['total_pct']:.1f} % of one CPU ({kinds})"


def _threads(t) -> str:
    if not t:
        return ""
    w = t.get("vde-networker") or []
    return (f"; threads: supervisor {t.get('vde-supervisor')}, each worker "
            f"{min(w) if w else '–'}–{max(w) if w else '–'}")


def _mem_row(variant, networks, per, mem) -> str:
    k = mem["kinds"]

    def cell(name, each=True):
        d = k.get(name)
        if not d:
            return "–"
        s = f"{d['pss_kb'] / MIB:.2f}"
        if each and d["count"] > 1:
            s += f" ({d['count']} × {d['pss_median_each_kb'] / MIB:.2f})"
        return s

    lead = f"| {variant} | {networks} × {per} " if variant else f"| {networks} × {per} "
    return (lead + f"| {cell('vde-supervisor', False)} | {cell('vde-networker')} | {cell('vde_switch')} | "
            f"{cell('vde_plug2tap')} | **{mem['pss_per_network_kb'] / MIB:.2f}** | "
            f"{mem['pss_per_network_with_supervisor_kb'] / MIB:.2f} | {mem['process_count']} |")


def _recovery_table(rec) -> str:
    """Recovery results are written by bench/recovery (someone else's script): its `summary`
    list when it has the expected shape, else every field generically."""
    summary = rec.get("summary") if isinstance(rec, dict) else None
    try:
        rows = [f"From `bench/results/recovery.json` ({rec.get('date', '?')}, {rec.get('runsPerFault', '?')} runs per "
                f"fault, {rec.get('buildConfiguration', '?')} build, probe every {_f(rec.get('probeIntervalSeconds'), 3)} s; "
                "A = the network whose process was killed, VM = a VM stand-in on A (a hand-started "
                "`vde_plug2tap`, as QEMU attaches), B = another network).", "",
                "| fault killed | outage A s | probes lost A | probes lost VM | outage B s | probes lost B | target | met (all runs / median) |",
                "|---|---|---|---|---|---|---|---|"]

        def mmm(d, digits):
            return f"{d['median']:.{digits}f} ({d['min']:.{digits}f}–{d['max']:.{digits}f})"
        for x in summary:
            vm = mmm(x["lostVM"], 0) if x.get("lostVM") else "–"
            if x.get("vmCut"):
                vm += f", cut in {x['vmCut']} of {x['runs']} runs"
            rows.append(f"| {x['fault']} | {mmm(x['outageA_s'], 3)} | {mmm(x['lostA'], 0)} | {vm} | {mmm(x['outageB_s'], 3)} | "
                        f"{mmm(x['lostB'], 0)} | {x.get('target', '')} | {'yes' if x.get('targetMet') else 'no'} / "
                        f"{'yes' if x.get('targetMetByMedian') else 'no'} |")
        return "\n".join(rows)
    except (TypeError, KeyError, AttributeError):
        pass
    rows = ["| measure | value |", "|---|---|"]

    def walk(prefix, v):
        if isinstance(v, dict):
            for kk, vv in v.items():
                walk(f"{prefix}.{kk}" if prefix else kk, vv)
        elif isinstance(v, list):
            if v and all(isinstance(x, (int, float)) for x in v):
                rows.append(f"| {prefix} | {', '.join(_f(x, 3) if isinstance(x, float) else str(x) for x in v)} |")
            else:
                for i, x in enumerate(v):
                    walk(f"{prefix}[{i}]", x)
        else:
            rows.append(f"| {prefix} | {_f(v, 3) if isinstance(v, float) else v} |")

    walk("", rec)
    return "\n".join(rows[:80])


def print_summary(r: dict) -> None:
    print()
    print(tables(r))


# --- plots ------------------------------------------------------------------------------------

def plots(r: dict, outdir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    made = []
    vde_c, br_c, hand_c, k_c = "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"

    ncr, dr = r.get("network_create_rm"), r.get("docker_run")
    if ncr and dr:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        groups = ["network create", "network rm", "docker run --rm true"]
        series = [("vde", vde_c, [ncr["vde"]["create"], ncr["vde"]["rm"], dr["vde"]]),
                  ("vde + vde IPAM", "#17becf", [ncr["vde_ipam"]["create"], ncr["vde_ipam"]["rm"], None]),
                  ("bridge", br_c, [ncr["bridge"]["create"], ncr["bridge"]["rm"], dr["bridge"]])]
        w = 0.26
        for i, (label, color, stats) in enumerate(series):
            xs, ys, lo, hi = [], [], [], []
            for g, s in enumerate(stats):
                if not s:
                    continue
                xs.append(g + (i - 1) * w)
                ys.append(s["median"] * 1000)
                lo.append((s["median"] - s["min"]) * 1000)
                hi.append((s["max"] - s["median"]) * 1000)
            ax.bar(xs, ys, w, label=label, color=color, yerr=[lo, hi], capsize=3)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel("ms (median, bars: min–max)")
        ax.set_title("Control plane through dockerd")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = os.path.join(outdir, "bench-control-plane.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    dp = r.get("dataplane")
    if dp:
        names = [k for k in ("vde", "vde_hand", "bridge", "kernel") if k in dp["paths"]]
        labels = {"vde": "vde network\n(plugin)", "vde_hand": "vde_switch +\nplugs by hand",
                  "bridge": "Docker\nbridge", "kernel": "Linux bridge\n+ veth"}
        colors = {"vde": vde_c, "vde_hand": hand_c, "bridge": br_c, "kernel": k_c}
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
        w = 0.38
        for j, (key, title) in enumerate((("tcp_fwd_mbit_s", "a→b"), ("tcp_rev_mbit_s", "b→a"))):
            for i, n in enumerate(names):
                s = dp["paths"][n][key]
                a1.bar(i + (j - 0.5) * w, s["median"], w, color=colors[n], alpha=1.0 if j == 0 else 0.6,
                       yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=3)
                a1.text(i + (j - 0.5) * w, s["max"] * 1.04, f"{s['median']:.0f}", ha="center", va="bottom", fontsize=7)
        a1.set_yscale("log")
        a1.set_ylim(top=max(dp["paths"][n][k]["max"] for n in names for k in ("tcp_fwd_mbit_s", "tcp_rev_mbit_s")) * 1.6)
        a1.set_xticks(range(len(names)), [labels[n] for n in names], fontsize=8)
        a1.set_ylabel("Mbit/s (log; left bar a→b, right b→a)")
        a1.set_title("iperf3 TCP throughput")
        a1.grid(axis="y", alpha=0.3, which="both")
        for i, n in enumerate(names):
            s = dp["paths"][n]["ping_avg_ms"]
            a2.bar(i, s["median"], 0.6, color=colors[n], yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=3)
            a2.text(i, s["max"], f"{s['median']:.3f}", ha="center", va="bottom", fontsize=8)
        a2.set_xticks(range(len(names)), [labels[n] for n in names], fontsize=8)
        a2.set_ylabel("ms")
        a2.set_title("ping average RTT")
        a2.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = os.path.join(outdir, "bench-data-plane.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    idle_run = r.get("idle")
    if idle_run and idle_run.get("vde"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        parts = [("vde-supervisor", "supervisor", br_c), ("vde-networker", "workers", vde_c),
                 ("vde_switch", "switches", hand_c), ("vde_plug2tap", "plugs", "#9467bd"),
                 ("dockerd", "dockerd", "#8c564b"), ("containerd", "containerd", "#e377c2"),
                 ("containerd-shim", "containers' shims", k_c)]
        drivers = [d for d in ("vde", "bridge") if idle_run.get(d)]
        bottoms = [0.0] * len(drivers)
        for kind, label, color in parts:
            vals = [idle_run[d]["idle"]["kinds"].get(kind, {}).get("pct_of_one_cpu", 0.0) for d in drivers]
            ax.bar(range(len(drivers)), vals, 0.5, bottom=bottoms, label=label, color=color)
            bottoms = [b + v for b, v in zip(bottoms, vals)]
        for i, b in enumerate(bottoms):
            ax.text(i, b, f"{b:.2f} %", ha="center", va="bottom", fontsize=8)
        ax.axhline(IDLE_TARGET_PCT, color="red", linestyle="--", linewidth=1, label="target for the plugin")
        ax.set_xticks(range(len(drivers)), [f"{d}\n{idle_run['networks']} × {idle_run['containers_per_network']}"
                                             for d in drivers])
        ax.set_ylabel("% of one CPU")
        ax.set_title(f"Idle CPU over {idle_run['seconds']:.0f} s")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = os.path.join(outdir, "bench-idle.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    rows = []
    for variant, s in (r.get("socket_scale") or {}).items():
        rows.append((f"socket, {variant}\n{s['networks']}×{s['endpoints_per_network']}", s["memory"], s["networks"]))
    for key, s in (r.get("scale") or {}).items():
        if s.get("memory") and s["containers_per_network"] == 2:
            rows.append((f"docker\n{s['networks']}×{s['containers_per_network']}", s["memory"], s["networks"]))
    if rows:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        kinds = [("vde-networker", "worker (vde-networker)", vde_c), ("vde_switch", "vde_switch", hand_c),
                 ("vde_plug2tap", "vde_plug2tap", "#9467bd"), ("vde-supervisor", "supervisor (share)", br_c)]
        bottoms = [0.0] * len(rows)
        for kind, label, color in kinds:
            vals = [m["kinds"].get(kind, {}).get("pss_kb", 0) / n / MIB for _, m, n in rows]
            ax.bar(range(len(rows)), vals, 0.6, bottom=bottoms, label=label, color=color)
            bottoms = [b + v for b, v in zip(bottoms, vals)]
        for i, b in enumerate(bottoms):
            ax.text(i, b, f"{b:.2f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(2.0, color="red", linestyle="--", linewidth=1, label="target 2 MiB / network")
        ax.set_xticks(range(len(rows)), [x[0] for x in rows], fontsize=8)
        ax.set_ylabel("MiB PSS per network")
        ax.set_title("Memory per network by process kind (PSS)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = os.path.join(outdir, "bench-memory.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    return made


def update_docs(r: dict) -> None:
    made = plots(r, IMG)
    body = tables(r)
    if made:
        body += "\n" + "\n".join(f"![{os.path.basename(p)}](img/{os.path.basename(p)})" for p in made) + "\n"
    text = open(DOC).read() if os.path.exists(DOC) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{body}\n{END}", text, flags=re.S)
    with open(DOC, "w") as f:
        f.write(text)
