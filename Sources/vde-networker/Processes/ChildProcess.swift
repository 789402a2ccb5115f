#if canImport(Glibc)
import Glibc
#endif
import Logging
import Shared
import Subprocess
import Synchronization

/// How a long-running child ended.
struct ChildExit: Sendable, CustomStringConvertible {
    var status: TerminationStatus?
    /// The last lines the child wrote to stderr, oldest first.
    var lastErrorLines: [String]

    var description: String {
        let how = status.map(\.summary) ?? "ended (status unknown)"
        guard let last = lastErrorLines.last else { return how }
        return "\(how): \(last)"
    }
}

/// A long-running child (`vde_switch`, `vde_plug2tap`) in its own process group.
///
/// Its stdout goes to the worker's stderr; its stderr goes to a ``ChildOutputPipe``, read line by
/// line, logged and the last lines kept for error messages. With `holdStandardInput` the child
/// gets a pipe on stdin that stays open until ``closeStandardInput()`` (vde_switch exits at EOF
/// on stdin, which makes the pipe its clean stop, and makes it exit by itself when the worker
/// dies).
final class ChildProcess: Sendable {
    let name: String
    let pid: pid_t
    private let standardInput: StandardInputWriter?
    private let state = Mutex(State())

    private struct State {
        var exit: ChildExit?
        var errorTail: [String] = []
        var exitHandler: (@Sendable (ChildExit) -> Void)?
    }

    private init(name: String, pid: pid_t, standardInput: StandardInputWriter?) {
        self.name = name
        self.pid = pid
        self.standardInput = standardInput
    }

    /// Starts `argv` and returns once it runs (not once it is ready: that is the caller's business).
    static func spawn(name: String, argv: [String], holdStandardInput: Bool, logger: Logger) async throws(ChildSpawnError) -> ChildProcess {
        precondition(!argv.isEmpty)
        let options = {
            var options = PlatformOptions()
            options.processGroupID = 0
            options.teardownSequence = [.send(signal: .terminate, allowedDurationToNextStep: .milliseconds(500))]
            return options
        }()
        // Its stderr: lines of up to 2 KiB; a flood keeps only the newest 64 unread lines.
        let errorPipe: ChildOutputPipe
        do {
            errorPipe = try ChildOutputPipe(maxLineBytes: 2048, bufferingPolicy: .bufferingNewest(64))
        } catch {
            throw ChildSpawnError(argv: argv, reason: "\(error)")
        }
        let resumed = OnceFlag()
        var childLogger = logger
        childLogger[metadataKey: "child"] = .string(name)
        let log = childLogger
        do {
            return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ChildProcess, any Error>) in
                Task.detached {
                    var child: ChildProcess?
                    do {
                        let result = try await Subprocess.run(
                            .path(.init(argv[0])), arguments: Arguments(Array(argv.dropFirst())),
                            platformOptions: options, input: .inputWriter,
                            output: .fileDescriptor(.standardError, closeAfterSpawningProcess: false),
                            error: .fileDescriptor(.init(rawValue: errorPipe.writeEnd), closeAfterSpawningProcess: false)
                        ) { execution in
                            errorPipe.closeWriteEnd()
                            let started = ChildProcess(name: name, pid: execution.processIdentifier.value,
                                                       standardInput: holdStandardInput ? execution.standardInputWriter : nil)
                            child = started
                            if !holdStandardInput { try? await execution.standardInputWriter.finish() }
                            if resumed.claim() { continuation.resume(returning: started) }
                            // Ends when the child has exited and closed its end of the pipe.
                            for await line in errorPipe.lines {
                                let text = switch line {
                                case .line(let bytes): String(decoding: bytes, as: UTF8.self)
                                case .oversized(let length): "(a line of \(length) bytes, dropped)"
                                }
                                guard !text.isEmpty else { continue }
                                log.notice("\(text)", metadata: ["pid": "\(started.pid)"])
                                started.recordErrorLine(text)
                            }
                        }
                        child?.finish(status: result.terminationStatus)
                    } catch {
                        errorPipe.closeWriteEnd()
                        if resumed.claim() {
                            continuation.resume(throwing: error)
                        } else {
                            child?.finish(status: nil)
                        }
                    }
                }
            }
        } catch {
            throw ChildSpawnError(argv: argv, reason: "\(error)")
        }
    }

    var hasExited: Bool { state.withLock { $0.exit != nil } }
    var exit: ChildExit? { state.withLock { $0.exit } }
    var lastErrorLines: [String] { state.withLock { $0.errorTail } }

    /// Calls `handler` once when the child exits, at once if it already has.
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void) {
        let already: ChildExit? = state.withLock { state in
            if let exit = state.exit { return exit }
            state.exitHandler = handler
            return nil
        }
        if let already { handler(already) }
    }

    /// Sends `signal` unless the child is known to have exited (its pid may then be reused).
    func send(_ signal: Int32) {
        state.withLock { state in
            if state.exit == nil { _ = kill(pid, signal) }
        }
    }

    /// Closes the child's stdin pipe (vde_switch then cleans up and exits).
    func closeStandardInput() async {
        try? await standardInput?.finish()
    }

    /// Polls until the child has exited or `timeout` passed; true when it has exited. Polls every
    /// 2 ms: a plug exits within a millisecond or two of SIGTERM, and every Leave and
    /// DeleteEndpoint waits here.
    func waitForExit(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !hasExited {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return true
    }

    /// SIGTERM, then SIGKILL after `grace`; returns when the child has exited (or after a last
    /// short wait, if even SIGKILL did not end it, e.g. in uninterruptible sleep).
    func terminate(grace: Duration = .milliseconds(500)) async {
        guard !hasExited else { return }
        send(SIGTERM)
        if await waitForExit(timeout: grace) { return }
        send(SIGKILL)
        _ = await waitForExit(timeout: .seconds(2))
    }

    private func recordErrorLine(_ line: String) {
        state.withLock { state in
            state.errorTail.append(line)
            if state.errorTail.count > 5 { state.errorTail.removeFirst() }
        }
    }

    private func finish(status: TerminationStatus?) {
        let handler: (@Sendable (ChildExit) -> Void)? = state.withLock { state in
            guard state.exit == nil else { return nil }
            state.exit = ChildExit(status: status, lastErrorLines: state.errorTail)
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
