"""The benchmarks' one reader of /proc: processes, their argv, parent, state, CPU time,
wakeups (context switches) and memory. Used by bench/lib/* and bench/recovery.

Every function returns an empty or neutral value for a process that is gone (it may exit
between listing and reading), never raises for that."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The plugin's processes, by the name of their executable (an impaired endpoint's plug is a
# wirefilter, issue 13); `vde-networker --fork-server`, which forks the workers, is a kind of
# its own: one per supervisor, not a worker; so is its spare (`--fork-spare`, forked ahead of
# the next network's request), counted with it.
FORK_SERVER = "vde-fork-server"
VDE_KINDS = ("vde-supervisor", "vde-networker", FORK_SERVER, "vde_switch", "vde_plug2tap", "wirefilter")
# Docker's own processes (the bridge driver lives inside dockerd).
DOCKER_KINDS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy")


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def cmdline(pid: int) -> list[str]:
    """argv of a process; [] when it is gone or a kernel thread."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the benchmarks use."""
    state: str
    ppid: int
    utime_ticks: int
    stime_ticks: int
    threads: int

    @property
    def cpu_seconds(self) -> float:
        return (self.utime_ticks + self.stime_ticks) / CLOCK_TICKS


def stat(pid: int, task: int | None = None) -> Stat | None:
    """/proc/PID/stat (or one thread's, /proc/PID/task/TID/stat); None when gone. The command
    name may hold spaces and parentheses: fields are counted after its last `)`."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        with open(path) as f:
            line = f.read()
        rest = line[line.rindex(")") + 2:].split()
        return Stat(state=rest[0], ppid=int(rest[1]), utime_ticks=int(rest[11]), stime_ticks=int(rest[12]),
                    threads=int(rest[17]))
    except (OSError, ValueError, IndexError):
        return None


def ppid(pid: int) -> int:
    s = stat(pid)
    return s.ppid if s else -1


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    s = stat(pid)
    return s is not None and s.state not in ("Z", "X")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 when gone."""
    s = stat(pid)
    return s.cpu_seconds if s else 0.0


def threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def thread_name(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def context_switches_by_thread(pid: int) -> dict[int, int]:
    """Voluntary + involuntary context switches of each of the process's threads: each
    voluntary one is a wakeup after sleeping (a timer, a read, a poll)."""
    counts: dict[int, int] = {}
    for tid in threads(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                counts[tid] = sum(int(line.split()[1]) for line in f
                                  if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        except (OSError, ValueError):
            pass
    return counts


def context_switches(pid: int) -> int:
    """Context switches summed over the process's threads (see context_switches_by_thread)."""
    return sum(context_switches_by_thread(pid).values())


def context_switches_since(before: dict[int, int], pid: int) -> int:
    """Context switches of `pid` since `before` (context_switches_by_thread): per thread alive
    now, its count minus what it had then (a new thread: all of it). A thread that ended in
    between is lost with its switches, so the figure is a lower bound, never negative."""
    now = context_switches_by_thread(pid)
    return sum(count - before.get(tid, 0) for tid, count in now.items())


def smaps_rollup(pid: int) -> dict[str, int]:
    """Pss, Rss, Private_* and friends of one process, in kB ({} when it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                m = re.match(r"^(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    except OSError:
        pass
    return out


def kind_of(argv: list[str], kinds=VDE_KINDS) -> str | None:
    """The process kind (basename of argv[0]) when it is one of `kinds`."""
    if not argv:
        return None
    base = os.path.basename(argv[0])
    if base == "vde-networker" and ("--fork-server" in argv or "--fork-spare" in argv):
        base = FORK_SERVER
    return base if base in kinds else None


def processes(kinds=VDE_KINDS) -> dict[int, tuple[str, list[str]]]:
    """Live processes of the given kinds: pid -> (kind, argv). Zombies are left out."""
    found = {}
    for pid in all_pids():
        kind = kind_of(cmdline(pid), kinds)
        if kind and alive(pid):
            found[pid] = (kind, cmdline(pid))
    return found


def processes_under(marker: str) -> dict[int, tuple[str, list[str]]]:
    """Our vde processes: those whose argv mentions `marker` (a private run dir or socket).
    Other people's processes on this machine are never counted or touched."""
    return {pid: v for pid, v in processes().items() if any(marker in a for a in v[1])}


def children(parent: int, kinds=VDE_KINDS) -> dict[int, tuple[str, list[str]]]:
    """Live direct children of `parent` of the given kinds."""
    found = {}
    for pid in all_pids():
        if ppid(pid) == parent:
            argv = cmdline(pid)
            kind = kind_of(argv, kinds)
            if kind and alive(pid):
                found[pid] = (kind, argv)
    return found
