import CLinux
import Glibc
import Logging
import Shared

/// One running `vde-networker` process and the JSON-lines link to it: over the stdin and stdout
/// of a worker it spawns, or over a connection to the socket of a worker that runs already
/// (adopted from an earlier supervisor, ``WorkerAdoption``).
///
/// `run` spawns the process (or serves the connection) and returns when the worker has exited
/// (or the link was detached); meanwhile `send` numbers a command, writes it as one request line
/// and waits for the reply with the same id. Events go to `onEvent`. Malformed, oversized or
/// unexpected lines from the worker are logged and survived.
actor WorkerLink {
    /// How the link reaches its worker.
    enum Connection: Sendable {
        /// Spawn a new worker; the link is its stdin and stdout.
        case spawn
        /// A worker that runs already: a connection to its socket, and the process behind it
        /// (its pid from `SO_PEERCRED`). It is not our child: its exit comes from the pidfd and
        /// whoever is its parent reaps it.
        case adopted(UnixSocket, ProcessHandle)
    }

    let networkID: NetworkID
    let connection: Connection
    /// True once ``detach()`` was called: the supervisor leaves the worker running.
    private var detached = false
    private let executable: String
    private let runDir: String
    private let logLevel: Logger.Level
    /// Forks new workers when it can (``WorkerForkServer``); else they are spawned with exec.
    private let forkServer: WorkerForkServer?
    private let logger: Logger
    private let onEvent: @Sendable (WorkerEvent) async -> Void

    private var pending: [UInt64: CheckedContinuation<WorkerReply, any Error>] = [:]
    private var nextRequestID: UInt64 = 1
    /// Lines waiting to be written to the worker's stdin; made at init so that requests sent
    /// before the process is up simply wait in the queue.
    private let outboxLines: AsyncStream<[UInt8]>
    private var outbox: AsyncStream<[UInt8]>.Continuation?
    private var exited = false
    /// The worker's pid while it runs.
    private(set) var pid: Int32?

    init(
        networkID: NetworkID, executable: String, runDir: String, logLevel: Logger.Level, logger: Logger,
        connection: Connection = .spawn, forkServer: WorkerForkServer? = nil,
        onEvent: @escaping @Sendable (WorkerEvent) async -> Void
    ) {
        self.forkServer = forkServer
        self.networkID = networkID
        self.connection = connection
        self.executable = executable
        self.runDir = runDir
        self.logLevel = logLevel
        self.logger = logger
        self.onEvent = onEvent
        (outboxLines, outbox) = AsyncStream<[UInt8]>.makeStream()
        (endStream, endSignal) = AsyncStream<Void>.makeStream()
    }

    /// Spawns the worker and serves the link until the worker exits.
    /// Returns a description of how it ended (exit status or spawn error).
    ///
    /// The pipes are served outside the actor (nonisolated), so that reading and writing never
    /// occupy the actor that requests, replies and timeouts need. The worker is started with
    /// ``ChildSpawn`` and its exit comes from its pidfd: swift-subprocess's `run { }` kept a 1 s
    /// timer chain running for each worker's whole life (an idle supervisor woke 100 times a
    /// second at 100 networks; strace, protocol helper's measurement).
    nonisolated func run() async -> String {
        switch connection {
        case .spawn: await runSpawned()
        case .adopted(let socket, let process): await runAdopted(socket, process)
        }
    }

    /// Serves the connection to an adopted worker until it ends: the worker exited (its pidfd
    /// says when), or the link was detached. The same socket carries both directions: a
    /// duplicate of it is read (``PipeLines`` closes that at EOF), the original is written.
    private nonisolated func runAdopted(_ socket: UnixSocket, _ process: ProcessHandle) async -> String {
        let stream = outboxLines
        let lines: AsyncStream<LineFramer.Line>
        do {
            let input = dup(socket.fd)
            guard input >= 0 else { throw SystemCallError.last("dup", socket.path) }
            do {
                lines = try PipeLines.lines(from: input, maxLineBytes: WorkerProtocol.maxLineBytes)
            } catch {
                close(input)
                throw error
            }
        } catch {
            socket.close()
            process.close()
            await finish(reason: "could not read from \(socket.path): \(error)")
            return "could not read from \(socket.path): \(error)"
        }
        await started(pid: process.pid)
        let writing = Task.detached {
            for await line in stream {
                guard await Self.write(line, to: socket.fd) else { break }
            }
            // The worker sees the end of its input (and then waits for the next supervisor).
            socket.shutdownWrite()
        }
        for await line in lines {
            await received(line)
        }
        await closeOutbox()
        await writing.value
        socket.close()
        let ending: String
        if await isDetached {
            ending = "detached (the worker keeps running)"
        } else {
            await process.waitForExit()
            ending = "exited (an adopted worker: its parent reaps it)"
        }
        process.close()
        await finish(reason: ending)
        return ending
    }

    private var isDetached: Bool { detached }

    /// Spawns the worker and serves its stdin and stdout until it exits (or the link is detached).
    private nonisolated func runSpawned() async -> String {
        let stream = outboxLines
        let argv = ForkServerProtocol.workerArguments(
            executable: executable, networkID: networkID, logLevel: logLevel.rawValue, runDir: runDir)
        let executable = self.executable
        // The worker's stdout: a small pipe of our own (see PipeLines); its stdin: a pipe whose
        // write end is ours, non-blocking (a full pipe waits for room in the descriptor watcher).
        typealias Pipes = (stdout: ChildOutputPipe, stdin: (read: Int32, write: Int32))
        func makePipes() throws -> Pipes {
            let stdout = try ChildOutputPipe(maxLineBytes: WorkerProtocol.maxLineBytes)
            switch Result(catching: { () throws(PipeLines.OpenError) in try PipeLines.open() }) {
            case .success(let stdin): return (stdout, stdin)
            case .failure(let error):
                stdout.closeWriteEnd()
                throw error
            }
        }
        func closeAll(_ pipes: Pipes) {
            close(pipes.stdin.read)
            close(pipes.stdin.write)
            pipes.stdout.closeWriteEnd()
        }
        var pipes: Pipes
        let process: ProcessHandle
        do {
            pipes = try makePipes()
            // Its own process group (forked or spawned): a Ctrl-C meant for the supervisor must
            // not reach workers first.
            switch forkServer?.startWorker(
                networkID: networkID, standardInput: pipes.stdin.read, standardOutput: pipes.stdout.writeEnd)
            {
            case .forked(let forked)?:
                process = forked
            case .failed?:
                // The pipes may have reached a worker the server forked before it failed: that
                // one reads the end of its input (and exits); this one gets pipes of its own.
                closeAll(pipes)
                pipes = try makePipes()
                fallthrough
            case .unavailable?, nil:
                do {
                    process = try ChildSpawn.startWatched(
                        argv, environment: WorkerEnvironment.current, standardInput: pipes.stdin.read,
                        standardOutput: pipes.stdout.writeEnd, standardError: 2)
                } catch {
                    closeAll(pipes)
                    throw error
                }
            }
            close(pipes.stdin.read)
            pipes.stdout.closeWriteEnd()
        } catch {
            await finish(reason: "could not run \(executable): \(error)")
            return "could not run \(executable): \(error)"
        }
        let (stdin, stdoutPipe) = (pipes.stdin, pipes.stdout)
        await started(pid: process.pid)
        _ = clinux_set_nonblocking(stdin.write)
        let writing = Task.detached {
            for await line in stream {
                guard await Self.write(line, to: stdin.write) else { break }
            }
            close(stdin.write)
        }
        let end = endSignal
        Task {
            for await line in stdoutPipe.lines {
                await received(line)
            }
            end.finish()
        }
        // EOF on its stdout (the worker is exiting), or the link was detached.
        for await _ in endStream {}
        await closeOutbox()
        await writing.value
        if await isDetached {
            process.close()
            await finish(reason: "detached (the worker keeps running)")
            return "detached (the worker keeps running)"
        }
        await process.waitForExit()
        let ending = ChildSpawn.reap(process).map(\.description) ?? "exited (status unknown: reaped elsewhere)"
        process.close()
        await finish(reason: ending)
        return ending
    }

    /// Writes all of `line` to the non-blocking `fd`, waiting in the descriptor watcher while it
    /// is full. False when the worker no longer reads (EPIPE) or on an error.
    private static func write(_ line: [UInt8], to fd: Int32) async -> Bool {
        (try? await DescriptorWatcher.writeAll(line, to: fd)) != nil
    }

    private func closeOutbox() {
        outbox?.finish()
        outbox = nil
    }

    /// Sends `command` and waits for its reply, at most `timeout`. A failure reply is thrown as
    /// the worker's ``VDEError``; so are a timeout and the worker's exit (`unavailable`).
    func send(_ command: WorkerCommand, timeout: Duration) async throws -> WorkerReply {
        guard !exited, let outbox else {
            throw VDEError.unavailable("the worker of network \(networkID.short) is not running")
        }
        let id = nextRequestID
        nextRequestID += 1
        var line = try JSONCoding.encode(WorkerRequest(id: id, command))
        line.append(UInt8(ascii: "\n"))
        logger.trace("to worker", metadata: ["line": "\(String(decoding: line.dropLast(), as: UTF8.self))"])
        let kind = command.kind
        let timer = Timeout.after(timeout) { await self.timedOut(id, command: kind, after: timeout) }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            pending[id] = continuation
            outbox.yield(line)
        }
    }

    /// Asks the worker to stop managing (SIGTERM): it detaches and exits, leaving its data path.
    func terminate() {
        signal(SIGTERM)
    }

    /// Kills the worker outright (its switch and plugs keep running for the next worker).
    func kill9() {
        signal(SIGKILL)
    }

    private func signal(_ number: Int32) {
        guard let pid, !exited else { return }
        switch connection {
        case .spawn: kill(pid, number)
        case .adopted(_, let process): process.send(number)
        }
    }

    /// Leaves the worker running and ends the link: the worker sees the end of its input and
    /// waits for the next supervisor on its socket. Requests still waiting fail.
    func detach() {
        guard !exited else { return }
        detached = true
        closeOutbox()
        switch connection {
        case .spawn: endSignal.finish()
        // Both directions end at once; the worker sees the end of its input.
        case .adopted(let socket, _): shutdown(socket.fd, Int32(SHUT_RDWR))
        }
    }

    /// Finished at EOF on a spawned worker's stdout, or by ``detach()`` (that stdout does not
    /// end when we stop using the worker).
    private let endSignal: AsyncStream<Void>.Continuation
    private let endStream: AsyncStream<Void>

    private func started(pid: Int32) {
        self.pid = pid
        logger.debug("worker started", metadata: ["pid": "\(pid)"])
    }

    private func received(_ line: LineFramer.Line) async {
        switch line {
        case .oversized(let length):
            logger.warning("dropped an oversized line from the worker", metadata: ["bytes": "\(length)"])
        case .line(let bytes):
            guard !bytes.isEmpty else { return }
            let message: WorkerMessage
            do {
                message = try JSONCoding.decode(WorkerMessage.self, from: bytes)
            } catch {
                logger.warning(
                    "malformed line from the worker",
                    metadata: [
                        "line": "\(String(decoding: bytes.prefix(200), as: UTF8.self))", "error": "\(error)",
                    ])
                return
            }
            logger.trace("from worker", metadata: ["line": "\(String(decoding: bytes, as: UTF8.self))"])
            switch message {
            case .reply(let id, let reply): answer(id, with: .success(reply))
            case .failure(let id, let error): answer(id, with: .failure(error))
            case .event(let event): await onEvent(event)
            }
        }
    }

    private func answer(_ id: UInt64, with outcome: Result<WorkerReply, VDEError>) {
        guard let continuation = pending.removeValue(forKey: id) else {
            logger.warning("reply to an unknown or timed-out request", metadata: ["id": "\(id)"])
            return
        }
        continuation.resume(with: outcome)
    }

    private func timedOut(_ id: UInt64, command: WorkerCommand.Kind, after timeout: Duration) {
        guard let continuation = pending.removeValue(forKey: id) else { return }
        logger.warning(
            "worker did not answer in time", metadata: ["command": "\(command.rawValue)", "timeout": "\(timeout)"])
        continuation.resume(throwing: WorkerTimeout(networkID: networkID, command: command, timeout: timeout))
    }

    private func finish(reason: String) {
        exited = true
        pid = nil
        closeOutbox()
        let waiting = pending
        pending.removeAll()
        for (_, continuation) in waiting {
            continuation.resume(
                throwing: VDEError.unavailable(
                    "the worker of network \(networkID.short) exited (\(reason))"))
        }
    }
}

/// A worker that did not answer a command in time: `unavailable` to the caller, and a sign
/// that the worker may hang (``NetworkWorker`` then checks it at once; see docs/recovery.md).
struct WorkerTimeout: ReportableError, CustomStringConvertible {
    var networkID: NetworkID
    var command: WorkerCommand.Kind
    var timeout: Duration

    var vdeError: VDEError {
        .unavailable("the worker of network \(networkID.short) did not answer '\(command.rawValue)' within \(timeout)")
    }
    var description: String { vdeError.message }
}
