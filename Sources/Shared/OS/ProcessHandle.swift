import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A process held by a pidfd: signals reach this very process (never a later one that reuses its
/// pid), and its exit is an event (``onExit(_:)``, ``waitForExit()``) from the
/// ``DescriptorWatcher``, for children and other processes alike (a switch adopted from an
/// earlier worker is not our child). The pidfd does not reap: a child is still reaped by its
/// parent (swift-subprocess, the supervisor's reaper). Close the handle when done: a pending
/// exit handler keeps it alive until then.
public final class ProcessHandle: Sendable {
    public typealias HandlerID = UInt64

    public let pid: pid_t

    private struct State {
        /// The pidfd; -1 once closed.
        var fd: Int32
        var exited = false
        /// Whether the descriptor watcher watches the pidfd for us.
        var armed = false
        var handlers: [HandlerID: @Sendable () -> Void] = [:]
        var nextID: HandlerID = 1
    }

    private let state: Mutex<State>

    /// Opens a pidfd for `pid`. ESRCH when there is no such process.
    public init(pid: pid_t) throws(SystemCallError) {
        guard pid > 0 else { throw SystemCallError(call: "pidfd_open", subject: "pid \(pid)", errno: ESRCH) }
        let fd = clinux_pidfd_open(pid)
        guard fd >= 0 else { throw .last("pidfd_open", "pid \(pid)") }
        self.pid = pid
        state = Mutex(State(fd: fd))
    }

    /// Takes `pidfd`, a pidfd on `pid` opened elsewhere (and passed here, as the fork server
    /// does for the workers it forks); the handle closes it.
    public init(pid: pid_t, pidfd: Int32) {
        precondition(pid > 0 && pidfd >= 0)
        self.pid = pid
        state = Mutex(State(fd: pidfd))
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

    /// Sends `signal`; false when the process is gone (reaped) or the handle is closed. (A zombie
    /// still takes signals, to no effect.)
    @discardableResult
    public func send(_ signal: Int32) -> Bool {
        state.withLock { $0.fd >= 0 && clinux_pidfd_send_signal($0.fd, signal) == 0 }
    }

    /// True once the process has exited (a pidfd becomes readable then), or the handle is closed.
    public var hasExited: Bool {
        state.withLock { state in
            guard state.fd >= 0 else { return true }
            if state.exited { return true }
            var entry = pollfd(fd: state.fd, events: Int16(POLLIN), revents: 0)
            return poll(&entry, 1, 0) == 1
        }
    }

    /// Calls `handler` once when the process exits: on the ``DescriptorWatcher``'s thread, or at
    /// once if it has exited. Returns an ID for ``cancel(_:)``; nil when `handler` will never be
    /// called (the handle is closed, or no watcher could be made: check ``hasExited``).
    @discardableResult
    public func onExit(_ handler: @escaping @Sendable () -> Void) -> HandlerID? {
        enum Outcome {
            case now
            case later(HandlerID)
            case never
        }
        let outcome: Outcome = state.withLock { state in
            if state.exited { return .now }
            guard state.fd >= 0 else { return .never }
            if !state.armed {
                guard let watcher = DescriptorWatcher.shared,
                    (try? watcher.watch(state.fd, events: .readable, { [self] in exited() })) != nil
                else { return .never }
                state.armed = true
            }
            let id = state.nextID
            state.nextID += 1
            state.handlers[id] = handler
            return .later(id)
        }
        switch outcome {
        case .now:
            handler()
            return nil
        case .later(let id): return id
        case .never: return nil
        }
    }

    /// Drops a handler set by ``onExit(_:)`` that has not run yet.
    public func cancel(_ id: HandlerID) {
        _ = state.withLock { $0.handlers.removeValue(forKey: id) }
    }

    /// Returns when the process has exited, or when the calling task is cancelled.
    public func waitForExit() async {
        let (events, continuation) = AsyncStream<Void>.makeStream()
        guard let id = onExit({ continuation.finish() }) else {
            if !hasExited {
                // No watcher (out of descriptors): nothing to wait on but the state itself.
                while !hasExited, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
            }
            return
        }
        defer { cancel(id) }
        for await _ in events {}
    }

    /// Waits at most `timeout` for the exit; true when the process has exited.
    public func waitForExit(timeout: Duration) async -> Bool {
        if hasExited { return true }
        _ = await Timeout.run(timeout) { await self.waitForExit() }
        return hasExited
    }

    /// A copy of the descriptor `target` of the process (`pidfd_getfd`; needs ptrace rights over
    /// it: root, or the same user without Yama restrictions). The caller closes it.
    public func duplicateDescriptor(_ target: Int32) throws(SystemCallError) -> Int32 {
        let copy = state.withLock { state -> Int32 in
            guard state.fd >= 0 else {
                errno = EBADF
                return -1
            }
            return clinux_pidfd_getfd(state.fd, target)
        }
        guard copy >= 0 else { throw .last("pidfd_getfd", "pid \(pid) fd \(target)") }
        return copy
    }

    /// Runs `body` with the pidfd (-1 once closed), which stays open meanwhile.
    func withDescriptor<T>(_ body: (Int32) -> T) -> T {
        state.withLock { body($0.fd) }
    }

    /// Closes the pidfd; pending ``onExit(_:)`` handlers are dropped. Further calls do nothing.
    public func close() {
        state.withLock { state in
            guard state.fd >= 0 else { return }
            if state.armed { DescriptorWatcher.shared?.forget(state.fd) }
            Glibc.close(state.fd)
            state.fd = -1
            state.handlers.removeAll()
        }
    }

    /// The watcher's report: the pidfd became readable.
    private func exited() {
        let handlers = state.withLock { state in
            state.exited = true
            defer { state.handlers.removeAll() }
            return Array(state.handlers.values)
        }
        for handler in handlers { handler() }
    }
}
