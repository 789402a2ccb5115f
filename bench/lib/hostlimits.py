"""The host limits that 1000 Docker networks and 1100 containers run into, read before the
`--scale N` run and raised for it where they stand in the way (put back at the end). What
each is for, measured on the bench machine (Debian 12, dockerd 20.10, cgroup v1, 2 CPUs):

- kernel.pid_max (32768 here): every thread takes a pid. A container costs its
  containerd-shim (about 11 threads) and its process; a vde network its worker (9 threads),
  switch and one plug per container. 1000 networks x 1.1 containers come to about 26000 tasks
  with dockerd's and containerd's, too close to 32768: raised to 4194304, the value systemd
  itself sets on 64-bit hosts since v243.
- net.ipv4.neigh.default.gc_thresh1/2/3 (128/512/1024): the host's ARP table. Docker's bridge
  driver puts the host on every network (the gateway), so a container that ARPs for it leaves
  an entry; at 1000 bridge networks that is over gc_thresh3 ("neighbour table overflow", and
  new entries are refused). Raised to 4096/16384/32768 during the bridge reference; vde
  networks do not involve the host (nothing is routed there).
- fs.inotify.max_user_instances (128): only read and reported (the inotify instances in use
  are counted before and after the build); with cgroup v1 neither dockerd nor containerd takes
  one per container, and the plugin uses none.
- RLIMIT_NOFILE of this process (inherited by a private supervisor) and of dockerd/containerd:
  read and reported; the supervisor holds about 3 descriptors per network (its link to the
  worker, the worker's pidfd, the worker's stderr pipe when it spawned it), so a soft limit of
  1024 stops it short of 340 networks. Raised to the hard limit for the private supervisor.
"""

from __future__ import annotations

import contextlib
import os
import resource

from common import log

SYSCTLS = {
    "kernel.pid_max": 4194304,
    "net.ipv4.neigh.default.gc_thresh1": 4096,
    "net.ipv4.neigh.default.gc_thresh2": 16384,
    "net.ipv4.neigh.default.gc_thresh3": 32768,
}
REPORTED = ["fs.inotify.max_user_instances", "fs.inotify.max_user_watches", "fs.file-max", "kernel.threads-max"]


def _path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def read(name: str) -> int:
    with open(_path(name)) as f:
        return int(f.read().split()[0])


def _write(name: str, value: int) -> None:
    with open(_path(name), "w") as f:
        f.write(str(value))


def inotify_instances() -> int:
    """inotify instances open on the host (all processes)."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                        n += 1
    return n


def neighbours() -> int:
    """Entries in the host's IPv4 neighbour (ARP) table."""
    with open("/proc/net/arp") as f:
        return max(0, len(f.readlines()) - 1)


def process_limits(pid: int) -> dict:
    out = {}
    with contextlib.suppress(OSError):
        for line in open(f"/proc/{pid}/limits"):
            if line.startswith(("Max open files", "Max processes")):
                name = line[:26].strip()  # the name column is 26 characters wide
                f = line[26:].split()
                out[name] = {"soft": f[0], "hard": f[1]}
    return out


class HostLimits:
    """Raises what `SYSCTLS` names where lower, and this process's open-file soft limit to its
    hard one; `restore()` puts the sysctls back."""

    def __init__(self) -> None:
        self.before: dict[str, int] = {}
        self.raised: dict[str, tuple[int, int]] = {}

    def raise_all(self) -> dict:
        for name, want in SYSCTLS.items():
            now = read(name)
            self.before[name] = now
            if now < want:
                _write(name, want)
                self.raised[name] = (now, want)
                log(f"limits: {name} {now} -> {want}")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log(f"limits: RLIMIT_NOFILE {soft} -> {hard} (this process and its private supervisors)")
        return self.report() | {"raised": {k: {"from": a, "to": b} for k, (a, b) in self.raised.items()},
                                "nofile_bench": resource.getrlimit(resource.RLIMIT_NOFILE)}

    def report(self) -> dict:
        out = {name: read(name) for name in [*SYSCTLS, *REPORTED]}
        out["inotify_instances_in_use"] = inotify_instances()
        out["arp_entries"] = neighbours()
        for kind in ("dockerd", "containerd"):
            pids = [p for p in os.listdir("/proc") if p.isdigit() and _comm(p) == kind]
            if pids:
                out[f"{kind}_limits"] = process_limits(int(min(pids, key=int)))
        return out

    def restore(self) -> None:
        for name, (old, _) in self.raised.items():
            with contextlib.suppress(OSError):
                _write(name, old)
                log(f"limits: {name} back to {old}")
        self.raised.clear()


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
