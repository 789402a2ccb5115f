import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The outcome of a short command (`ip ...`, `nsenter ... ip ...`).
struct CommandResult: Sendable {
    /// Nil only when the exit could not be read (the child was reaped elsewhere).
    var status: ChildSpawn.Exit?
    var standardOutput: String
    var standardError: String

    var succeeded: Bool { status == .exited(0) }

    /// The first line of stderr, or the exit status: what a user needs to see in an error.
    var failureSummary: String {
        let firstLine = standardError.split(separator: "\n").first.map(String.init) ?? ""
        return firstLine.isEmpty ? (status?.description ?? "ended (status unknown)") : firstLine
    }
}

/// A short command that could not be run, or that failed.
struct CommandError: ReportableError, CustomStringConvertible {
    var argv: [String]
    var reason: String

    var description: String { "\(argv.joined(separator: " ")): \(reason)" }
    var vdeError: VDEError { .system(description) }
}

/// Runs short-lived commands from argv arrays, capturing their output, with a time limit.
///
/// On ``ChildSpawn``, ``ChildOutputPipe`` and the child's pidfd, the parts the worker's long-lived
/// children use, not swift-subprocess: linking swift-subprocess cost every worker its type
/// caches and code (docs/benchmarks.md, "Issue 17: towards 1 MiB per network") for three short
/// commands (`ip link del`, `nsenter ... ip -o link show`, the `arping` after a re-plug).
struct CommandRunner: Sendable {
    var logger: Logger
    var timeout: Duration = .seconds(10)

    /// Runs `argv` and returns its result, whatever its exit status; throws only when it could not
    /// be started or did not finish in time (its process group is then killed).
    func run(_ argv: [String]) async throws(CommandError) -> CommandResult {
        precondition(!argv.isEmpty)
        logger.debug("running \(argv.joined(separator: " "))")
        let output: ChildOutputPipe
        let errors: ChildOutputPipe
        do {
            output = try ChildOutputPipe(maxLineBytes: 64 << 10)
            do {
                errors = try ChildOutputPipe(maxLineBytes: 4096)
            } catch {
                output.closeWriteEnd()
                throw error
            }
        } catch {
            throw CommandError(argv: argv, reason: "could not be run: \(error)")
        }
        let handle: ProcessHandle
        do {
            handle = try ChildSpawn.startWatched(argv, standardOutput: output.writeEnd, standardError: errors.writeEnd)
        } catch {
            output.closeWriteEnd()
            errors.closeWriteEnd()
            let reason = error.errno == ENOENT ? "no such program" : "could not be run: \(error)"
            throw CommandError(argv: argv, reason: reason)
        }
        output.closeWriteEnd()
        errors.closeWriteEnd()
        defer { handle.close() }
        let limit = timeout
        let finished = await Timeout.run(limit) { () -> (String, String) in
            async let standardOutput = Self.text(of: output.lines)
            async let standardError = Self.text(of: errors.lines)
            await handle.waitForExit()
            return (await standardOutput, await standardError)
        }
        guard let (standardOutput, standardError) = finished else {
            // Its process group (ChildSpawn starts it in one of its own): nothing it started stays.
            kill(-handle.pid, SIGKILL)
            await handle.waitForExit()
            _ = ChildSpawn.reap(handle)
            let milliseconds = limit.milliseconds
            let within = milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
            throw CommandError(argv: argv, reason: "did not finish within \(within)")
        }
        return CommandResult(
            status: ChildSpawn.reap(handle), standardOutput: standardOutput, standardError: standardError)
    }

    /// The lines of `lines` joined by newlines, each ending with one (an oversized line is
    /// dropped, as the limit means it to be).
    private static func text(of lines: AsyncStream<LineFramer.Line>) async -> String {
        var text = ""
        for await line in lines {
            if case .line(let bytes) = line { text += String(decoding: bytes, as: UTF8.self) + "\n" }
        }
        return text
    }

    /// Runs `argv` and throws unless it exits with status 0.
    @discardableResult
    func check(_ argv: [String]) async throws(CommandError) -> CommandResult {
        let result = try await run(argv)
        guard result.succeeded else {
            throw CommandError(argv: argv, reason: result.failureSummary)
        }
        return result
    }
}
