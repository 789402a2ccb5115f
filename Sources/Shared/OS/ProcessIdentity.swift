#if canImport(Glibc)
    import Glibc
#endif

/// A process named beyond doubt: its pid plus its start time (field 22 of `/proc/PID/stat`,
/// clock ticks since boot). A pid alone may have been reused by another process since it was
/// written down; pid and start time together never are.
///
/// Pid files (``PIDFile``) hold `PID STARTTIME`; a process is signalled only when both match and
/// its program is the expected one.
public struct ProcessIdentity: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var pid: pid_t
    public var startTime: UInt64

    public init(pid: pid_t, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    public var description: String { "pid \(pid) (started at tick \(startTime))" }

    /// The identity of the running process `pid`, or nil when there is none (or only a zombie).
    public static func of(pid: pid_t) -> ProcessIdentity? {
        guard let stat = ProcFS.stat(of: pid), !stat.isGone else { return nil }
        return ProcessIdentity(pid: pid, startTime: stat.startTime)
    }

    /// True when this very process still runs and its program (argv[0]'s last component) is `program`.
    public func isRunning(program: String) -> Bool {
        guard ProcessIdentity.of(pid: pid) == self else { return false }
        return ProcFS.program(of: pid) == program
    }

    /// The pid file line: `PID STARTTIME`.
    public var fileText: String { "\(pid) \(startTime)\n" }

    /// Reads a pid file line written by ``fileText``; nil for anything else (an old file holding
    /// only a pid proves nothing about the process that has that pid now).
    public init?(fileText: String) {
        let parts = fileText.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        guard parts.count == 2, let pid = pid_t(parts[0]), pid > 1, let start = UInt64(parts[1]) else { return nil }
        self.init(pid: pid, startTime: start)
    }

    /// Sends SIGTERM, waits up to `grace` for the process to go, then SIGKILL, and waits for
    /// that too (at most 2 s). Signals only while the identity (and program) still match, and
    /// through a pidfd (``ProcessHandle``), so a pid reused meanwhile is never hit; the exit is
    /// learnt from the pidfd, not by polling, and works for processes that are not our children.
    public func stop(program: String, grace: Duration = .milliseconds(500)) async {
        guard isRunning(program: program), let handle = try? ProcessHandle(self) else { return }
        defer { handle.close() }
        // Checked again after the pidfd is open: now it names this very process or one that has exited.
        guard isRunning(program: program) else { return }
        handle.send(SIGTERM)
        if await handle.waitForExit(timeout: grace) { return }
        handle.send(SIGKILL)
        _ = await handle.waitForExit(timeout: .seconds(2))
    }
}

extension ProcessIdentity {
    /// The daemon `read` finds through its pid file, waited for until `deadline`: a daemon writes
    /// that file after its fork, a moment after its launcher exited (vde_switch `-d -p`,
    /// wirefilter `--daemon --pidfile`). Polled every 2 ms, a few milliseconds once per start:
    /// the file is most often there at the first read (through dockerd, the switch's whole start,
    /// spawn to pid file, took 1.7 to 2.0 ms median; pauses growing from 0.25 ms changed nothing
    /// measurable). Nil when no daemon showed up in time.
    ///
    /// Why not inotify on the directory, which announces the file: closing an inotify instance
    /// that had a watch waits for the kernel's fsnotify grace period, 5 to 20 ms here (Linux
    /// 6.18): it made the switch's start take 14 to 21 ms instead of 1. Nor can a process keep
    /// one for its life: a user gets 128 (`fs.inotify.max_user_instances`), a host 1000 workers.
    public static func awaitDaemon(until deadline: ContinuousClock.Instant, _ read: () -> ProcessIdentity?) async
        -> ProcessIdentity?
    {
        while true {
            if let identity = read() { return identity }
            guard ContinuousClock.now < deadline else { return nil }
            try? await Task.sleep(for: .milliseconds(2))
        }
    }
}
