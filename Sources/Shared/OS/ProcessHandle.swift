#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization

/// A process held by a pidfd: signals reach this very process (never a later one that reuses its
/// pid), and its exit is an event (``onExit(_:)``, ``waitForExit()``), for children and other
/// processes alike (a switch adopted from an earlier worker is not our child). The pidfd does
/// not reap: a child is still reaped by its parent (swift-subprocess, the supervisor's reaper).
public final class ProcessHandle: Sendable {
    public let pid: pid_t
    /// The pidfd; -1 once closed.
    private let descriptor: Mutex<Int32>

    /// Opens a pidfd for `pid`. ESRCH when there is no such process.
    public init(pid: pid_t) throws(SystemCallError) {
        guard pid > 0 else { throw SystemCallError(call: "pidfd_open", subject: "pid \(pid)", errno: ESRCH) }
        let fd = clinux_pidfd_open(pid)
        guard fd >= 0 else { throw .last("pidfd_open", "pid \(pid)") }
        self.pid = pid
        descriptor = Mutex(fd)
    }

    /// Opens a pidfd for the process `identity` names, and only for it: the start time is checked
    /// after the pidfd is open, so the handle holds that process (or one that has since exited),
    /// never another that got its pid. ESRCH when it no longer runs.
    public convenience init(_ identity: ProcessIdentity) throws(SystemCallError) {
        try self.init(pid: identity.pid)
        guard ProcessIdentity.of(pid: identity.pid) == identity else {
            close()
            throw SystemCallError(call: "pidfd_open", subject: identity.description, errno: ESRCH)
        }
    }

    deinit { close() }

    /// Sends `signal`; false when the process has exited (or the handle is closed).
    @discardableResult
    public func send(_ signal: Int32) -> Bool {
        descriptor.withLock { fd in fd >= 0 && clinux_pidfd_send_signal(fd, signal) == 0 }
    }

    /// True once the process has exited (a pidfd becomes readable then).
    public var hasExited: Bool {
        descriptor.withLock { fd in
            guard fd >= 0 else { return true }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            return poll(&entry, 1, 0) == 1
        }
    }

    /// Calls `handler` once, on the exit monitor's thread, when the process exits (at once if it
    /// has). Returns a token for ``cancel(_:)``; nil when the handle is closed or no monitor
    /// could be made (then `handler` is never called: check ``hasExited``).
    @discardableResult
    public func onExit(_ handler: @escaping @Sendable () -> Void) -> ExitMonitor.Token? {
        guard let monitor = ExitMonitor.shared else { return nil }
        return descriptor.withLock { fd -> ExitMonitor.Token? in
            guard fd >= 0 else { return nil }
            return try? monitor.watch(fd, handler)
        }
    }

    /// Drops a handler set by ``onExit(_:)`` that has not run yet.
    public func cancel(_ token: ExitMonitor.Token) {
        ExitMonitor.shared?.cancel(token)
    }

    /// Returns when the process has exited, or when the calling task is cancelled.
    public func waitForExit() async {
        let (events, continuation) = AsyncStream<Void>.makeStream()
        guard let token = onExit({ continuation.finish() }) else {
            // No monitor: nothing to wait on but the state itself.
            while !hasExited, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
            return
        }
        defer { cancel(token) }
        for await _ in events {}
    }

    /// Waits at most `timeout` for the exit; true when the process has exited.
    public func waitForExit(timeout: Duration) async -> Bool {
        if hasExited { return true }
        _ = await Timeout.run(timeout) { await self.waitForExit() }
        return hasExited
    }

    /// Closes the pidfd (a pending ``onExit(_:)`` handler is dropped). Further calls do nothing.
    public func close() {
        descriptor.withLock { fd in
            guard fd >= 0 else { return }
            ExitMonitor.shared?.forget(fd)
            Glibc.close(fd)
            fd = -1
        }
    }
}

/// The process's one watcher of pidfds: one thread blocked in `epoll_wait` for all of them, so
/// waiting for exits costs nothing while nothing exits, however many processes are watched.
public final class ExitMonitor: Sendable {
    public typealias Token = UInt64

    private struct Watch {
        var fd: Int32
        var handler: @Sendable () -> Void
    }

    private struct State {
        var watches: [Token: Watch] = [:]
        var next: Token = 1
    }

    /// Nil when no epoll instance could be made (out of descriptors).
    public static let shared: ExitMonitor? = {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { return nil }
        let monitor = ExitMonitor(epoll: epoll)
        Task.detached { await Blocking.run { monitor.loop() } }
        return monitor
    }()

    private let epoll: Int32
    private let state = Mutex(State())

    private init(epoll: Int32) { self.epoll = epoll }

    /// Calls `handler` once when `fd` becomes readable (a pidfd: its process exited). The caller
    /// keeps `fd` open until the handler ran or it called ``forget(_:)``.
    func watch(_ fd: Int32, _ handler: @escaping @Sendable () -> Void) throws(SystemCallError) -> Token {
        try state.withLock { state throws(SystemCallError) -> Token in
            let token = state.next
            state.next += 1
            guard clinux_epoll_add(epoll, fd, UInt32(EPOLLIN.rawValue) | UInt32(EPOLLONESHOT.rawValue), token) == 0 else {
                throw .last("epoll_ctl")
            }
            state.watches[token] = Watch(fd: fd, handler: handler)
            return token
        }
    }

    func cancel(_ token: Token) {
        state.withLock { state in
            guard let watch = state.watches.removeValue(forKey: token) else { return }
            _ = clinux_epoll_remove(epoll, watch.fd)
        }
    }

    /// Drops every watch of `fd` (before it is closed).
    func forget(_ fd: Int32) {
        state.withLock { state in
            for (token, watch) in state.watches where watch.fd == fd {
                state.watches[token] = nil
                _ = clinux_epoll_remove(epoll, fd)
            }
        }
    }

    private func loop() {
        while true {
            var token: UInt64 = 0
            let n = clinux_epoll_wait_one(epoll, &token, -1)
            guard n == 1 else { continue }
            let handler: (@Sendable () -> Void)? = state.withLock { state in
                guard let watch = state.watches.removeValue(forKey: token) else { return nil }
                _ = clinux_epoll_remove(epoll, watch.fd)
                return watch.handler
            }
            handler?()
        }
    }
}
