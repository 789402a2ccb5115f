import Logging
import Shared
import Subprocess

/// The outcome of a short command (`ip ...`, `nsenter ... ip ...`).
struct CommandResult: Sendable {
    var status: TerminationStatus
    var standardOutput: String
    var standardError: String

    var succeeded: Bool { status.isSuccess }

    /// The first line of stderr, or the exit status: what a user needs to see in an error.
    var failureSummary: String {
        let firstLine = standardError.split(separator: "\n").first.map(String.init) ?? ""
        return firstLine.isEmpty ? status.summary : firstLine
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
struct CommandRunner: Sendable {
    var logger: Logger
    var timeout: Duration = .seconds(10)

    /// Runs `argv` and returns its result, whatever its exit status; throws only when it could not
    /// be started or did not finish in time (it is then killed).
    func run(_ argv: [String]) async throws(CommandError) -> CommandResult {
        precondition(!argv.isEmpty)
        logger.debug("running \(argv.joined(separator: " "))")
        let options = {
            var options = PlatformOptions()
            options.processGroupID = 0
            return options
        }()
        let limit = timeout
        do {
            // At the limit the run is cancelled, which kills the command (teardown ends with SIGKILL).
            let result = try await Timeout.run(limit) {
                let result = try await Subprocess.run(
                    .path(.init(argv[0])), arguments: Arguments(Array(argv.dropFirst())),
                    platformOptions: options, input: .none,
                    output: .string(limit: 1 << 20), error: .string(limit: 1 << 16))
                return CommandResult(
                    status: result.terminationStatus,
                    standardOutput: result.standardOutput,
                    standardError: result.standardError)
            }
            guard let result else {
                throw CommandError(argv: argv, reason: "did not finish within \(limit.milliseconds / 1000) s")
            }
            return result
        } catch let error as CommandError {
            throw error
        } catch {
            throw CommandError(argv: argv, reason: "could not be run: \(error)")
        }
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

extension TerminationStatus {
    /// `exited with status 1` / `killed by signal 9`.
    var summary: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}
