import Glibc
import Subprocess
import Synchronization
import SystemPackage

/// What a finished command did.
struct CommandResult: Sendable, CustomStringConvertible {
    var argv: [String]
    var status: TerminationStatus
    var stdout: String
    var stderr: String

    var succeeded: Bool { status.isSuccess }
    /// Both streams, for matching error texts wherever a tool prints them.
    var output: String { stdout + stderr }

    var description: String {
        var text = "`\(argv.joined(separator: " "))` \(status)"
        let out = stdout.trimmingWhitespace
        let err = stderr.trimmingWhitespace
        if !out.isEmpty { text += "\n  stdout: \(out.prefix(4000))" }
        if !err.isEmpty { text += "\n  stderr: \(err.prefix(4000))" }
        return text
    }
}

/// Runs programs with an argv array (never a shell), captures their output, and kills them
/// (their whole process group) when they outlive a timeout.
enum Command {
    static let outputLimit = 4 * 1024 * 1024

    /// Runs `argv` and returns what it did, whatever its exit status.
    static func run(_ argv: [String], timeout: Duration = .seconds(60), stdin: String? = nil) async throws
        -> CommandResult
    {
        try await run(argv, timeout: timeout, input: .text(stdin ?? ""))
    }

    /// Runs `argv` reading `stdin` (a pipe's end, closed here once the child has it), e.g. a
    /// reader such as `tcpdump -r -`, and returns what it did, whatever its exit status.
    static func run(_ argv: [String], timeout: Duration = .seconds(60), stdin: FileDescriptor) async throws
        -> CommandResult
    {
        try await run(argv, timeout: timeout, input: .descriptor(stdin))
    }

    private enum Input: Sendable {
        case text(String)
        case descriptor(FileDescriptor)
    }

    private static func run(_ argv: [String], timeout: Duration, input: Input) async throws -> CommandResult {
        precondition(!argv.isEmpty)
        let executable: Executable = argv[0].contains("/") ? .path(FilePath(argv[0])) : .name(argv[0])
        let options = {
            var options = PlatformOptions()
            options.processGroupID = 0  // its own group, so a timeout kills what it started too
            return options
        }()
        let pid = Locked<pid_t?>(nil)
        let finished = Locked(false)

        enum Outcome: Sendable {
            case finished(CommandResult)
            case timedOut
        }
        let arguments = Arguments(Array(argv.dropFirst()))
        return try await withThrowingTaskGroup(of: Outcome.self) { group in
            group.addTask {
                let result =
                    switch input {
                    case .text(let text):
                        try await Subprocess.run(
                            executable, arguments: arguments, platformOptions: options, input: .string(text),
                            output: .string(limit: outputLimit), error: .string(limit: outputLimit)
                        ) { pid.set($0.processIdentifier.value) }
                    case .descriptor(let fd):
                        try await Subprocess.run(
                            executable, arguments: arguments, platformOptions: options,
                            input: .fileDescriptor(fd, closeAfterSpawningProcess: true),
                            output: .string(limit: outputLimit), error: .string(limit: outputLimit)
                        ) { pid.set($0.processIdentifier.value) }
                    }
                finished.set(true)
                return .finished(
                    CommandResult(
                        argv: argv, status: result.terminationStatus,
                        stdout: result.standardOutput, stderr: result.standardError))
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return .timedOut
            }
            guard let first = try await group.next() else { throw CancellationError() }
            switch first {
            case .finished(let result):
                group.cancelAll()
                return result
            case .timedOut:
                // Kill the group (the child is its leader) unless it has just finished.
                finished.withLock { done in
                    if !done, let p = pid.value { kill(-p, SIGKILL) }
                }
                var partial: CommandResult?
                while let next = try await group.next() {
                    if case .finished(let r) = next { partial = r }
                }
                throw AcceptanceFailure(
                    "command timed out after \(timeout) and was killed: \(partial.map(String.init(describing:)) ?? argv.joined(separator: " "))"
                )
            }
        }
    }

    /// Runs `argv` and throws (with its output) unless it exits 0.
    @discardableResult
    static func check(_ argv: [String], timeout: Duration = .seconds(60), stdin: String? = nil) async throws
        -> CommandResult
    {
        let result = try await run(argv, timeout: timeout, stdin: stdin)
        guard result.succeeded else { throw AcceptanceFailure("command failed: \(result)") }
        return result
    }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// A value shared between tasks behind a lock.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    var value: Value { mutex.withLock { $0 } }
    func set(_ value: Value) { mutex.withLock { $0 = value } }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
