import Logging
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How a long-running child ended.
struct ChildExit: Sendable, CustomStringConvertible {
    var status: ChildSpawn.Exit?
    /// The last lines the child wrote to stderr, oldest first.
    var lastErrorLines: [String]

    var description: String {
        let how = status.map(\.description) ?? "ended (status unknown)"
        guard let last = lastErrorLines.last else { return how }
        return "\(how): \(last)"
    }
}

/// A long-running child (`vde_plug2tap`, or the launcher of a detached `vde_switch`) in its own
/// process group, with stdin on /dev/null and no parent-death signal, so that it outlives the
/// worker.
///
/// Its stdout goes to the worker's stderr; its stderr goes to a ``ChildOutputPipe``, read line by
/// line, logged and the last lines kept for error messages.
///
/// Started by ``ChildSpawn`` and watched through its pidfd (``ProcessHandle``): while it runs,
/// nothing in the worker wakes up for it.
final class ChildProcess: SupervisedProcess {
    let name: String
    let pid: pid_t
    private let handle: ProcessHandle
    private let state = Mutex(State())

    private struct State {
        var exit: ChildExit?
        var errorTail: [String] = []
        var exitHandler: (@Sendable (ChildExit) -> Void)?
        /// Waiters of ``waitForExit(timeout:)``, told when the child has exited.
        var exitWaiters: [AsyncStream<Void>.Continuation] = []
        /// False once ``stopWatching()`` was called: the exit handler no longer runs.
        var watching = true
    }

    private init(name: String, pid: pid_t, handle: ProcessHandle) {
        self.name = name
        self.pid = pid
        self.handle = handle
    }

    /// Starts `argv` and returns once it runs (not once it is ready: that is the caller's business).
    static func spawn(name: String, argv: [String], logger: Logger)
        async throws(ChildSpawnError) -> ChildProcess
    {
        precondition(!argv.isEmpty)
        // Its stderr: lines of up to 2 KiB; a flood keeps only the newest 64 unread lines.
        let errorPipe: ChildOutputPipe
        do {
            errorPipe = try ChildOutputPipe(maxLineBytes: 2048, bufferingPolicy: .bufferingNewest(64))
        } catch {
            throw ChildSpawnError(argv: argv, reason: "\(error)")
        }
        let handle: ProcessHandle
        do {
            handle = try ChildSpawn.startWatched(
                argv, standardInput: nil, standardOutput: 2, standardError: errorPipe.writeEnd)
        } catch {
            errorPipe.closeWriteEnd()
            throw ChildSpawnError(argv: argv, reason: error.errno == ENOENT ? "no such program" : "\(error)")
        }
        errorPipe.closeWriteEnd()
        let pid = handle.pid
        let child = ChildProcess(name: name, pid: pid, handle: handle)
        var childLogger = logger
        childLogger[metadataKey: "child"] = .string(name)
        let log = childLogger
        Task.detached {
            // Ends when the child (and whatever inherited its stderr) has closed the pipe.
            for await line in errorPipe.lines {
                let text =
                    switch line {
                    case .line(let bytes): String(decoding: bytes, as: UTF8.self)
                    case .oversized(let length): "(a line of \(length) bytes, dropped)"
                    }
                guard !text.isEmpty else { continue }
                log.notice("\(text)", metadata: ["pid": "\(pid)"])
                child.recordErrorLine(text)
            }
            await handle.waitForExit()
            let status = ChildSpawn.reap(handle)
            handle.close()
            child.finish(status: status)
        }
        return child
    }

    var hasExited: Bool { state.withLock { $0.exit != nil } }
    var exit: ChildExit? { state.withLock { $0.exit } }
    var lastErrorLines: [String] { state.withLock { $0.errorTail } }

    /// Calls `handler` once when the child exits, at once if it already has.
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void) {
        let already: ChildExit? = state.withLock { state in
            if let exit = state.exit { return exit }
            guard state.watching else { return nil }
            state.exitHandler = handler
            return nil
        }
        if let already { handler(already) }
    }

    /// Sends `signal` through the child's pidfd (never to a process that reused its pid).
    func send(_ signal: Int32) {
        handle.send(signal)
    }

    /// Waits until the child has exited or `timeout` passed; true when it has exited. Told by
    /// the child's pidfd: no polling.
    func waitForExit(timeout: Duration) async -> Bool {
        let (exited, continuation) = AsyncStream<Void>.makeStream()
        let already = state.withLock { state in
            if state.exit != nil { return true }
            state.exitWaiters.append(continuation)
            return false
        }
        if already { return true }
        _ = await Timeout.run(timeout) { for await _ in exited {} }
        return hasExited
    }

    /// Drops the exit handler: the child runs on, and its exit is no longer reported (it is
    /// still reaped, should it exit before this process does).
    func stopWatching() {
        state.withLock { state in
            state.watching = false
            state.exitHandler = nil
        }
    }

    private func recordErrorLine(_ line: String) {
        state.withLock { state in
            state.errorTail.append(line)
            if state.errorTail.count > 5 { state.errorTail.removeFirst() }
        }
    }

    private func finish(status: ChildSpawn.Exit?) {
        let handler: (@Sendable (ChildExit) -> Void)? = state.withLock { state in
            guard state.exit == nil else { return nil }
            state.exit = ChildExit(status: status, lastErrorLines: state.errorTail)
            for waiter in state.exitWaiters { waiter.finish() }
            state.exitWaiters = []
            defer { state.exitHandler = nil }
            return state.exitHandler
        }
        if let handler, let exit { handler(exit) }
    }
}

/// A child program that could not be started at all (missing executable, no permission).
struct ChildSpawnError: Error, Sendable, CustomStringConvertible {
    var argv: [String]
    var reason: String

    var description: String { "could not start \(argv.joined(separator: " ")): \(reason)" }
}
