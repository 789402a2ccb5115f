import CLinux
import Glibc

/// SIGINT and SIGTERM as a readable descriptor for the capture command's poll loop: the handler
/// writes the signal's number to a pipe (write(2) is async-signal-safe), so Ctrl-C wakes the
/// loop at once, between two frames, and the capture ends in order (its end record, the
/// counts) instead of the process dying mid-write. SIGPIPE is ignored: a closed stdout is EPIPE.
enum StopSignals {
    /// The pipe's write end, for the handler; -1 before ``install()``.
    nonisolated(unsafe) private static var writeEnd: Int32 = -1

    /// Installs the handlers; returns the read end (non-blocking), or nil when no pipe could be made.
    static func install() -> Int32? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds {
            _ = clinux_set_nonblocking(fd)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        writeEnd = fds[1]
        signal(SIGPIPE, SIG_IGN)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { number in
            var byte = UInt8(truncatingIfNeeded: number)
            let saved = errno
            _ = write(StopSignals.writeEnd, &byte, 1)
            errno = saved
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGINT, &action, nil)
        sigaction(SIGTERM, &action, nil)
        return fds[0]
    }

    /// The signals that arrived since the last call (drains the pipe).
    static func take(_ readEnd: Int32) -> [Int32] {
        var buffer = [UInt8](repeating: 0, count: 16)
        var numbers: [Int32] = []
        while true {
            let count = read(readEnd, &buffer, buffer.count)
            guard count > 0 else { return numbers }
            numbers += buffer.prefix(count).map { Int32($0) }
        }
    }
}
