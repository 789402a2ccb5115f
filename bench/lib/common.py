"""Shared helpers of the benchmark: commands, timing, statistics, memory, the plugin lock,
a private or real supervisor, and a registry of things to clean up.

Everything here runs as root on the benchmark machine. Traffic only ever goes between
namespaces and containers that the benchmark itself creates."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import procfs

DOCKER = "/usr/bin/docker"  # Debian's 20.10 client, which speaks to the local dockerd 20.10
IMAGE = "vde-test-busybox:latest"
LABEL = "vde-bench=1"
REAL_SOCKET = "/run/docker/plugins/vde.sock"
PLUGIN_LOCK = "/run/vde-docker-plugin.lock"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> bool:
    """Stops a helper process a measurement started (a one-shot `iperf3 -s -1`, an `strace -c`,
    a capture): `sig` unless it exited already, then SIGKILL if it has not gone within `timeout`
    seconds. True when it ended without the SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def run(argv: list[str], check: bool = True, capture: bool = True, timeout: float | None = 300,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Runs argv (never a shell string); raises with stderr on failure when check."""
    p = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {(p.stderr or '').strip()[-800:]}")
    return p


def timed(argv: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = run(argv, **kw)
    return time.perf_counter() - t0, p


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "mean": statistics.fmean(values)}


def ratio(a: dict, b: dict) -> float | None:
    if a.get("n") and b.get("n") and b["median"]:
        return a["median"] / b["median"]
    return None


# --- memory ---------------------------------------------------------------------------------

def memory_breakdown(procs: dict[int, tuple[str, list[str]]]) -> dict:
    """Per process kind: count, total PSS/RSS/private (kB), and PSS per process."""
    kinds: dict[str, dict] = {}
    for pid, (kind, _) in procs.items():
        r = procfs.smaps_rollup(pid)
        k = kinds.setdefault(kind, {"count": 0, "pss_kb": 0, "rss_kb": 0, "private_kb": 0, "pss_each_kb": []})
        k["count"] += 1
        k["pss_kb"] += r.get("Pss", 0)
        k["rss_kb"] += r.get("Rss", 0)
        k["private_kb"] += r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
        k["pss_each_kb"].append(r.get("Pss", 0))
    for k in kinds.values():
        each = k.pop("pss_each_kb")
        k["pss_median_each_kb"] = statistics.median(each) if each else 0
    return kinds


# --- cleanup --------------------------------------------------------------------------------

def stop_like_ctrl_c() -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt as Ctrl-C does, so that every `finally`
    and Cleanup runs: by default Python dies of SIGTERM at once, and a lab killed that way (by
    `timeout`, say) left its supervisor, workers, switches, plugs and taps behind. SIGINT gets
    its default handler back too (a shell that starts us in the background ignores it)."""
    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


class Cleanup:
    """Last-in-first-out undo actions; each failure is reported and the rest still run."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, callable]] = []

    def push(self, what: str, action) -> None:
        self.actions.append((what, action))

    def run_all(self) -> None:
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                log(f"cleanup of {what} failed: {e}")


# --- the plugin lock and supervisors ---------------------------------------------------------

def socket_answers(path: str) -> bool:
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


@contextlib.contextmanager
def real_socket_lock(max_wait: float = 1800):
    """Holds the exclusive lock on the shared plugin socket, and waits (polling, bounded) until
    nothing answers on it. The lock is released when the block ends."""
    fd = os.open(PLUGIN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max_wait
    try:
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{PLUGIN_LOCK} stayed locked for {max_wait:.0f}s")
                if not announced:
                    log(f"waiting for {PLUGIN_LOCK} (someone else's Docker tests)")
                    announced = True
                time.sleep(2)
        announced = False
        while socket_answers(REAL_SOCKET):
            if time.monotonic() > deadline:
                raise RuntimeError(f"something still answers on {REAL_SOCKET} after {max_wait:.0f}s")
            if not announced:
                log(f"something answers on {REAL_SOCKET}; waiting until it stops")
                announced = True
            time.sleep(5)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class Supervisor:
    """A vde-supervisor of ours with its own state dir, run dir and control socket."""
    bin_dir: str
    socket_path: str | None = None  # None: a private socket in the work dir
    log_level: str = os.environ.get("VDE_BENCH_LOG_LEVEL", "warning")
    env: dict | None = None  # extra environment (inherited by workers)
    netns: str | None = None  # run it (and so its workers and their children) in this named netns
    workdir: str = field(default="")
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        # Short paths: switch sockets live under the run dir and unix paths are short.
        self.workdir = tempfile.mkdtemp(prefix="vdeb-", dir="/tmp")
        self.run_dir = os.path.join(self.workdir, "run")
        self.state_dir = os.path.join(self.workdir, "state")
        self.control = os.path.join(self.workdir, "control.sock")
        if self.socket_path is None:
            self.socket_path = os.path.join(self.workdir, "vde.sock")
        self.log_path = os.path.join(self.workdir, "supervisor.log")
        self.seen: set[tuple[int, tuple[str, ...]]] = set()

    def _in_netns(self, argv: list[str]) -> list[str]:
        """`ip netns exec` also mounts the namespace's own /sys, where the worker looks for taps."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def start(self, timeout: float = 30) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        os.makedirs(self.state_dir, exist_ok=True)
        argv = [os.path.join(self.bin_dir, "vde-supervisor"), "run", "--socket", self.socket_path,
                "--control-socket", self.control, "--state-dir", self.state_dir, "--run-dir", self.run_dir,
                "--config", os.path.join(self.workdir, "none.conf"), "--log-level", self.log_level]
        self.logf = open(self.log_path, "ab")
        env = dict(os.environ) | (self.env or {})
        self.proc = subprocess.Popen(self._in_netns(argv), stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        from plugin_client import PluginClient, PluginError  # local import: no cycle at module load
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vde-supervisor exited at start ({self.proc.returncode}); see {self.log_path}")
            if socket_answers(self.socket_path):
                try:
                    with PluginClient(self.socket_path) as c:
                        c.call("/Plugin.Activate")
                    self.socket_inode = os.stat(self.socket_path).st_ino
                    return
                except (OSError, PluginError):
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"vde-supervisor did not answer on {self.socket_path} within {timeout}s")

    def socket_is_ours(self) -> bool:
        """False when another process replaced our socket file (someone not honouring the lock)."""
        try:
            return os.stat(self.socket_path).st_ino == getattr(self, "socket_inode", None)
        except FileNotFoundError:
            return False

    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def workers(self) -> dict[int, tuple[str, list[str]]]:
        """Workers get only `--network-id` in argv: find them as the supervisor's children."""
        if not self.proc:
            return {}
        return procfs.children(self.proc.pid, ("vde-networker",))

    def our_processes(self) -> dict[int, tuple[str, list[str]]]:
        procs = {pid: v for pid, v in procfs.processes_under(self.run_dir).items() if v[0] != "vde-supervisor"}
        procs |= self.workers()
        self.seen |= {(pid, tuple(v[1])) for pid, v in procs.items()}
        if self.proc and self.proc.poll() is None:
            procs[self.proc.pid] = ("vde-supervisor", procfs.cmdline(self.proc.pid))
        return procs

    def stop(self, timeout: float = 12) -> float:
        """SIGTERM and wait (SIGKILL after `timeout`); returns the seconds it took to exit."""
        if not self.proc or self.proc.poll() is not None:
            return 0.0
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"vde-supervisor did not stop within {timeout:.0f}s of SIGTERM; killing it")
            self.stop_timed_out = True
            self.proc.kill()
            self.proc.wait()
        dt = time.perf_counter() - t0
        self.stop_networks()
        self.logf.close()
        return dt

    def stop_networks(self, timeout: float | None = None) -> None:
        """A stopped supervisor leaves its workers, switches and plugs running (docs/recovery.md):
        `vde-supervisor stop-networks` stops them (not timed: it is cleanup, not the stop). The
        limit grows with the networks left: after a lab of about 500 networks failed half-built,
        988 of its taps were left (the cause not proven; a fixed 60 s is short for that many)."""
        if timeout is None:
            left = len(os.listdir(self.run_dir)) if os.path.isdir(self.run_dir) else 0
            timeout = max(60.0, 0.25 * left)
        argv = [os.path.join(self.bin_dir, "vde-supervisor"), "stop-networks", "--state-dir", self.state_dir,
                "--run-dir", self.run_dir, "--networker", os.path.join(self.bin_dir, "vde-networker")]
        result = subprocess.run(self._in_netns(argv), stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf, timeout=timeout)
        if result.returncode != 0:
            log(f"vde-supervisor stop-networks failed ({result.returncode}); see {self.log_path}")

    def leftovers(self) -> dict:
        """What is left of this supervisor's networks: processes, run dir entries. While the
        supervisor runs, its fork server is its own, not a network's; once it has stopped, the
        fork server counts too."""
        running = self.proc is not None and self.proc.poll() is None
        procs = {pid: v for pid, v in procfs.processes_under(self.run_dir).items()
                 if v[0] != "vde-supervisor" and not (running and v[0] == procfs.FORK_SERVER)}
        procs |= self.workers()
        # Workers seen earlier that still run (a stopped supervisor's workers lose their parent).
        for pid, argv in self.seen:
            if running and procfs.kind_of(list(argv)) == procfs.FORK_SERVER:
                continue
            if pid not in procs and tuple(procfs.cmdline(pid)) == argv:
                procs[pid] = (procfs.kind_of(list(argv)) or "?", list(argv))
        entries = sorted(os.listdir(self.run_dir)) if os.path.isdir(self.run_dir) else []
        return {"processes": [f"{pid} {' '.join(a)}" for pid, (_, a) in procs.items()], "run_dir_entries": entries}

    def remove_workdir(self, keep_log_to: str | None = None) -> None:
        if keep_log_to and os.path.exists(self.log_path):
            shutil.copy(self.log_path, keep_log_to)
        # Kill anything of ours still running (it would be a leak, reported before this).
        for pid in procfs.processes_under(self.run_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- interfaces -----------------------------------------------------------------------------

def host_links() -> set[str]:
    out = run(["ip", "-o", "link", "show"]).stdout
    names = set()
    for line in out.splitlines():
        m = re.match(r"^\d+:\s+([^:@]+)", line)
        if m:
            names.add(m.group(1))
    return names


def plugin_taps() -> set[str]:
    """Host-netns interfaces named like the plugin's taps (`vde` + 12 characters of an ID)."""
    return {n for n in host_links() if re.fullmatch(r"vde[0-9a-f]{12}", n)}


def write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def machine_info() -> dict:
    info: dict = {}
    with contextlib.suppress(Exception):
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    info["cpus"] = os.cpu_count()
    with contextlib.suppress(Exception):
        kb = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
        info["mem_gib"] = round(kb / 1024 / 1024, 1)
    info["kernel"] = os.uname().release
    with contextlib.suppress(Exception):
        info["os"] = next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME"))
    with contextlib.suppress(Exception):
        info["dockerd"] = run([DOCKER, "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    with contextlib.suppress(Exception):
        info["swift"] = run(["swift", "--version"]).stdout.strip().splitlines()[0]
    with contextlib.suppress(Exception):
        info["vde2"] = run(["dpkg-query", "-W", "-f", "${Version}", "vde2"]).stdout.strip()
    with contextlib.suppress(Exception):
        info["iperf3"] = run(["iperf3", "--version"]).stdout.splitlines()[0].strip()
    with contextlib.suppress(Exception):
        info["git"] = run(["git", "-C", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "rev-parse", "--short", "HEAD"]).stdout.strip()
    return info
