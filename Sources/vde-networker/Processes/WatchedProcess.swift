import Logging
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What the worker needs of a switch or plug process, whether it is its child (``ChildProcess``)
/// or not (``WatchedProcess``).
protocol SupervisedProcess: AnyObject, Sendable {
    var pid: pid_t { get }
    var hasExited: Bool { get }
    /// How it ended, once it has.
    var exit: ChildExit? { get }
    /// Calls `handler` once when the process exits, at once if it already has.
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void)
    /// Sends `signal` to this very process (through its pidfd).
    func send(_ signal: Int32)
    /// Waits until the process has exited or `timeout` passed; true when it has exited.
    func waitForExit(timeout: Duration) async -> Bool
    /// Stops watching: no exit handler runs any more. The process itself runs on.
    func stopWatching()
}

extension SupervisedProcess {
    /// SIGTERM, then SIGKILL after `grace`; returns when the process has exited (or after a last
    /// short wait, if even SIGKILL did not end it, e.g. in uninterruptible sleep).
    func terminate(grace: Duration = .milliseconds(500)) async {
        guard !hasExited else { return }
        send(SIGTERM)
        if await waitForExit(timeout: grace) { return }
        send(SIGKILL)
        _ = await waitForExit(timeout: .seconds(2))
    }
}

/// A process the worker watches through its pidfd (``ProcessHandle``) but is not the parent of,
/// so it never reaps it: a `vde_switch -d` it started (the daemon's parent, the launcher, exits
/// at once, so the daemon is re-parented to the nearest child subreaper, the supervisor, or to
/// init), or a switch or plug that an earlier worker of the network left running.
///
/// Its exit status belongs to whoever reaps it: ``exit`` carries none.
final class WatchedProcess: SupervisedProcess {
    let identity: ProcessIdentity
    var pid: pid_t { identity.pid }
    private let handle: ProcessHandle

    private struct State {
        var exit: ChildExit?
        var exitHandler: (@Sendable (ChildExit) -> Void)?
        var waiters: [AsyncStream<Void>.Continuation] = []
        var watching = true
    }

    private let state = Mutex(State())

    /// Watches the process `identity` names, and only it (pid and start time are checked after
    /// the pidfd is open). Throws ESRCH when it no longer runs.
    init(_ identity: ProcessIdentity) throws(SystemCallError) {
        self.identity = identity
        handle = try ProcessHandle(identity)
        if handle.onExit({ [weak self] in self?.finish() }) == nil, handle.hasExited {
            finish()
        }
    }

    deinit { handle.close() }

    /// Once it stopped watching (``stopWatching()``), only what was seen before.
    var hasExited: Bool {
        let (exited, watching) = state.withLock { ($0.exit != nil, $0.watching) }
        return exited || (watching && handle.hasExited)
    }

    var exit: ChildExit? {
        if let exit = state.withLock({ $0.exit }) { return exit }
        return hasExited ? ChildExit(status: nil, lastErrorLines: []) : nil
    }

    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void) {
        let already: ChildExit? = state.withLock { state in
            if let exit = state.exit { return exit }
            state.exitHandler = handler
            return nil
        }
        if let already { handler(already) }
    }

    func send(_ signal: Int32) { handle.send(signal) }

    func waitForExit(timeout: Duration) async -> Bool {
        let (exited, continuation) = AsyncStream<Void>.makeStream()
        let already = state.withLock { state in
            if state.exit != nil || !state.watching { return true }
            state.waiters.append(continuation)
            return false
        }
        if already { return state.withLock { $0.exit != nil } }
        _ = await Timeout.run(timeout) { for await _ in exited {} }
        return hasExited
    }

    /// Closes the pidfd: no exit handler runs any more (see ``Worker/detach(reason:)``).
    func stopWatching() {
        let waiters = state.withLock { state in
            state.watching = false
            state.exitHandler = nil
            defer { state.waiters = [] }
            return state.waiters
        }
        handle.close()
        for waiter in waiters { waiter.finish() }
    }

    /// The pidfd's report (from the descriptor watcher's thread): the process has exited.
    private func finish() {
        let (handler, waiters, exit) = state.withLock {
            state -> ((@Sendable (ChildExit) -> Void)?, [AsyncStream<Void>.Continuation], ChildExit?) in
            guard state.exit == nil else { return (nil, [], nil) }
            let exit = ChildExit(status: nil, lastErrorLines: [])
            state.exit = exit
            defer {
                state.exitHandler = nil
                state.waiters = []
            }
            return (state.watching ? state.exitHandler : nil, state.waiters, exit)
        }
        for waiter in waiters { waiter.finish() }
        if let handler, let exit { handler(exit) }
    }
}
