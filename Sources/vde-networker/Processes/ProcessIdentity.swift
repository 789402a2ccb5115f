#if canImport(Glibc)
import Glibc
#endif
import Logging

/// A process named beyond doubt: its pid plus its start time (field 22 of `/proc/PID/stat`,
/// clock ticks since boot). A pid alone may have been reused by another process since it was
/// written down; pid and start time together never are.
///
/// Pid files of the worker (`plugs/*.pid`, `switch.pid`) hold `PID STARTTIME`; a process is
/// signalled only when both match and its program is the expected one.
struct ProcessIdentity: Equatable, Sendable, CustomStringConvertible {
    var pid: pid_t
    var startTime: UInt64

    var description: String { "pid \(pid) (started at tick \(startTime))" }

    /// The identity of the running process `pid`, or nil when there is none (or only a zombie).
    static func of(pid: pid_t) -> ProcessIdentity? {
        guard pid > 0, let stat = FileSystem.readFile("/proc/\(pid)/stat"),
              let fields = fieldsAfterCommand(stat), fields.count > 19,
              fields[0] != "Z", fields[0] != "X", let start = UInt64(fields[19]) else { return nil }
        return ProcessIdentity(pid: pid, startTime: start)
    }

    /// The fields of a `/proc/PID/stat` line after `(comm)`, from the state (field 3) on; the
    /// command name may itself hold spaces and parentheses, so the last `)` ends it.
    static func fieldsAfterCommand(_ stat: String) -> [Substring]? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
    }

    /// True when this very process still runs and its program (argv[0]'s last component) is `program`.
    func isRunning(program: String) -> Bool {
        guard ProcessIdentity.of(pid: pid) == self else { return false }
        return ProcessIdentity.program(of: pid) == program
    }

    /// The last path component of argv[0] of `pid`; nil for a zombie or a vanished process.
    static func program(of pid: pid_t) -> String? {
        guard let bytes = FileSystem.readBytes("/proc/\(pid)/cmdline", limit: 4096), !bytes.isEmpty else { return nil }
        let first = bytes.split(separator: 0, omittingEmptySubsequences: false).first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return FileSystem.lastComponent(of: first)
    }

    /// The pid file line: `PID STARTTIME`.
    var fileText: String { "\(pid) \(startTime)\n" }

    /// Reads a pid file line written by ``fileText``; nil for anything else (an old file holding
    /// only a pid proves nothing about the process that has that pid now).
    init?(fileText: String) {
        let parts = fileText.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        guard parts.count == 2, let pid = pid_t(parts[0]), pid > 1, let start = UInt64(parts[1]) else { return nil }
        self.init(pid: pid, startTime: start)
    }

    init(pid: pid_t, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// Sends SIGTERM, waits up to `grace` for the process to go, then SIGKILL. Signals only while
    /// the identity (and program) still match, so a pid reused meanwhile is never hit.
    func stop(program: String, grace: Duration = .milliseconds(500)) async {
        guard isRunning(program: program) else { return }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while isRunning(program: program), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if isRunning(program: program) { kill(pid, SIGKILL) }
    }
}
