import CLinux
import Glibc
import Logging
import Shared
import Synchronization

/// The supervisor's end of the worker fork server: one `vde-networker --fork-server` process,
/// started with the first worker, that forks each new worker (``ForkServerProtocol``,
/// docs/worker-protocol.md, "The fork server").
///
/// Forked workers share the pages the server filled while it started (relocations, metadata
/// caches, heap) until they write to them, and skip exec and the runtime's start: measured in
/// docs/benchmarks.md, "The fork server". What a worker is does not change: the same code, the
/// same link over its stdin and stdout, its own process group, the supervisor its parent (the
/// server forks it detached; the supervisor is a child subreaper) holding a pidfd the server
/// sends along, and `vde-networker --network-id ID` in `ps`, which adoption checks.
///
/// Used only in a child subreaper (the supervisor makes itself one at start): a forked worker
/// must become our child, to be reaped by us with its exit status. Elsewhere (a test process
/// that drives a plugin in-process) workers are spawned with exec.
///
/// Whenever the server cannot fork a worker (it does not start, does not answer within
/// ``replyTimeout``, or refuses), it is stopped and the caller spawns the worker itself, as
/// before (``Outcome``). After a failed start the server is not tried again for ``retryAfter``.
final class WorkerForkServer: Sendable {
    /// What ``startWorker(networkID:standardInput:standardOutput:)`` did.
    enum Outcome {
        /// The worker, our child, to be reaped with ``ChildSpawn/reap(_:)``.
        case forked(ProcessHandle)
        /// No request reached a server (none runs here, or it cannot start): the descriptors
        /// went nowhere; spawn the worker with them.
        case unavailable
        /// A request reached the server, which then failed: a worker it forked may hold the
        /// descriptors; spawn the worker with new ones.
        case failed
    }

    let executable: String
    let runDir: String
    let logLevel: Logger.Level
    private let logger: Logger

    /// A running server: the supervisor's end of its socket, and the process.
    private struct Server {
        let socket: Int32
        let process: ProcessHandle
    }

    private struct State {
        var server: Server?
        var stopped = false
        var failedStartAt: ContinuousClock.Instant?
    }

    private let state = Mutex(State())

    /// How long one fork may take before the server is given up (a fork is about a
    /// millisecond; a server that takes seconds is stuck).
    static let replyTimeout: Duration = .seconds(5)
    /// How long the workers are spawned with exec after the server failed to start.
    static let retryAfter: Duration = .seconds(60)

    init(executable: String, runDir: String, logLevel: Logger.Level, logger: Logger) {
        self.executable = executable
        self.runDir = runDir
        self.logLevel = logLevel
        var logger = logger
        logger[metadataKey: "fork-server"] = "\(executable)"
        self.logger = logger
    }

    /// Forks a worker for `networkID` with `standardInput` and `standardOutput` (the caller
    /// keeps and closes its own copies); see ``Outcome``.
    ///
    /// Blocks the calling thread for the exchange (one fork in the server, about a millisecond):
    /// requests are answered one at a time, in order.
    func startWorker(networkID: NetworkID, standardInput: Int32, standardOutput: Int32) -> Outcome {
        guard clinux_is_child_subreaper() == 1 else { return .unavailable }
        var started: ProcessHandle?
        let outcome: Outcome = state.withLock { state in
            guard !state.stopped else { return .unavailable }
            // A server that died since the last request (the request could not be sent) is
            // replaced once.
            for attempt in 1...2 {
                if state.server == nil {
                    if let failed = state.failedStartAt, ContinuousClock.now - failed < Self.retryAfter {
                        return .unavailable
                    }
                    guard let server = startServer() else {
                        state.failedStartAt = .now
                        return .unavailable
                    }
                    state.server = server
                    started = server.process
                }
                guard let server = state.server else { return .unavailable }
                let fds = [standardInput, standardOutput]
                do {
                    try DescriptorMessages.send(
                        DescriptorMessages.Message(bytes: Array(networkID.rawValue.utf8), descriptors: fds),
                        on: server.socket)
                } catch {
                    logger.notice("the fork server is gone", metadata: ["error": "\(error)"])
                    Self.stop(server)
                    state.server = nil
                    if attempt == 1 { continue }
                    return .unavailable
                }
                do {
                    return .forked(try reply(for: networkID, from: server))
                } catch {
                    logger.warning(
                        "the fork server could not fork a worker; spawning it instead",
                        metadata: ["network": "\(networkID.short)", "error": "\(error)"])
                    Self.stop(server)
                    state.server = nil
                    return .failed
                }
            }
            return .unavailable
        }
        // Outside the lock: the handler may run at once.
        if let started { reapOnExit(started) }
        return outcome
    }

    /// Ends the server (it exits at the end of its input) and waits up to 2 s for it; workers
    /// are spawned with exec from now on.
    func stop() async {
        let server = state.withLock { state -> Server? in
            state.stopped = true
            defer { state.server = nil }
            return state.server
        }
        guard let server else { return }
        close(server.socket)
        if !(await server.process.waitForExit(timeout: .seconds(2))) {
            server.process.send(SIGKILL)
            _ = await server.process.waitForExit(timeout: .seconds(1))
        }
    }

    // MARK: internals

    private func startServer() -> Server? {
        let argv = ForkServerProtocol.serverArguments(
            executable: executable, logLevel: logLevel.rawValue, runDir: runDir)
        do {
            let (ours, theirs) = try DescriptorMessages.socketPair()
            defer { close(theirs) }
            do {
                let process = try ChildSpawn.startWatched(
                    argv, environment: WorkerEnvironment.current, standardInput: theirs, standardOutput: nil,
                    standardError: 2)
                logger.debug("fork server started", metadata: ["pid": "\(process.pid)"])
                return Server(socket: ours, process: process)
            } catch {
                close(ours)
                throw error
            }
        } catch {
            logger.warning(
                "cannot start the worker fork server; workers are spawned with exec for \(Self.retryAfter.milliseconds / 1000) s",
                metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The server's reply to the request just sent: the worker it forked.
    private func reply(for networkID: NetworkID, from server: Server) throws -> ProcessHandle {
        guard DescriptorMessages.waitReadable(server.socket, timeout: Self.replyTimeout) else {
            throw SystemCallError(call: "recvmsg", subject: "the fork server (no reply)", errno: ETIMEDOUT)
        }
        guard let message = try DescriptorMessages.receive(on: server.socket, capacity: ForkServerProtocol.Reply.size)
        else {
            throw SystemCallError(call: "recvmsg", subject: "the fork server (it closed its end)", errno: ECONNRESET)
        }
        guard let reply = ForkServerProtocol.Reply(bytes: message.bytes) else {
            message.closeDescriptors()
            throw SystemCallError(call: "recvmsg", subject: "the fork server (a malformed reply)", errno: EPROTO)
        }
        guard reply.errno == 0, message.descriptors.count == 1 else {
            message.closeDescriptors()
            throw SystemCallError(call: "fork", subject: "a worker for network \(networkID.short)", errno: reply.errno)
        }
        return ChildSpawn.takeOver(pid: reply.pid, pidfd: message.descriptors[0])
    }

    /// Closes our end (the server exits at the end of its input) and kills it, for a server
    /// that failed us.
    private static func stop(_ server: Server) {
        close(server.socket)
        server.process.send(SIGKILL)
    }

    /// Reaps the server when it exits, whatever the reason.
    private func reapOnExit(_ process: ProcessHandle) {
        let logger = logger
        process.onExit {
            let exit = ChildSpawn.reap(process)
            process.close()
            logger.debug(
                "fork server exited", metadata: ["pid": "\(process.pid)", "how": "\(exit.map(\.description) ?? "?")"])
        }
    }
}
