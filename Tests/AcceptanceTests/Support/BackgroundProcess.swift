import Glibc
import Subprocess
import SystemPackage

/// A program the test keeps running in the background while a scoped body runs.
struct BackgroundProcess: Sendable {
    let argv: [String]
    let pid: pid_t
    let logPath: String?
    /// The write end of the program's stdin, when the test holds it (vde_switch needs that).
    let stdin: StandardInputWriter

    /// True while the process runs (not exited, not a zombie waiting to be reaped).
    var isRunning: Bool { HostInspector.processState(pid).map { $0 != "Z" && $0 != "X" } ?? false }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// What the program has logged so far (empty without a log file).
    func logTail(_ maxBytes: Int = 8000) -> String {
        guard let logPath else { return "" }
        return TempDir.readText(logPath).map { String($0.suffix(maxBytes)) } ?? ""
    }
}

/// How to stop a background program when its scope ends.
enum StopStyle: Sendable {
    /// Close its stdin and wait (vde_switch exits cleanly on EOF); then SIGTERM, then SIGKILL.
    case closeStdin
    /// SIGTERM, then SIGKILL.
    case terminate
}

enum Background {
    /// Starts `argv` (stdout and stderr to `logPath`, or discarded), runs `body` with it, then
    /// stops it whether `body` succeeded or threw. Returns the body's outcome and how the
    /// program ended. `graceDeadline` bounds each stop step before the next, harder one.
    static func with<T: Sendable>(
        _ argv: [String],
        logPath: String? = nil,
        stop: StopStyle = .terminate,
        graceDeadline: Duration = .seconds(10),
        _ body: (BackgroundProcess) async throws -> T
    ) async throws -> (outcome: Result<T, any Error>, status: TerminationStatus, stopSteps: [String]) {
        precondition(!argv.isEmpty)
        var options = PlatformOptions()
        options.processGroupID = 0
        let logFD: FileDescriptor
        if let logPath {
            logFD = try FileDescriptor.open(
                FilePath(logPath), .writeOnly, options: [.create, .truncate, .closeOnExec],
                permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } else {
            logFD = try FileDescriptor.open(FilePath("/dev/null"), .writeOnly, options: [.closeOnExec])
        }
        let result = try await Subprocess.run(
            .path(FilePath(argv[0])), arguments: Arguments(Array(argv.dropFirst())),
            platformOptions: options,
            input: .inputWriter,
            output: .fileDescriptor(logFD, closeAfterSpawningProcess: true),
            error: .combinedWithOutput
        ) { execution -> (Result<T, any Error>, [String]) in
            let process = BackgroundProcess(
                argv: argv, pid: execution.processIdentifier.value, logPath: logPath,
                stdin: execution.standardInputWriter)
            let outcome: Result<T, any Error>
            do { outcome = .success(try await body(process)) } catch { outcome = .failure(error) }
            let steps = await stopProcess(process, style: stop, grace: graceDeadline)
            return (outcome, steps)
        }
        let (outcome, steps) = result.closureResult
        return (outcome, result.terminationStatus, steps)
    }

    /// Stops `process` step by step; returns the steps that were needed (e.g. ["SIGTERM"]).
    static func stopProcess(_ process: BackgroundProcess, style: StopStyle, grace: Duration) async -> [String] {
        var steps: [String] = []
        func exited(within deadline: Duration) async -> Bool {
            (try? await Poll.until(
                "\(process.argv[0]) (pid \(process.pid)) to exit", deadline: deadline, every: .milliseconds(50)
            ) {
                !process.isRunning
            }) != nil
        }
        if style == .closeStdin {
            steps.append("close stdin")
            try? await process.stdin.finish()
            if await exited(within: grace) { return steps }
        }
        steps.append("SIGTERM")
        process.signal(SIGTERM)
        if await exited(within: grace) { return steps }
        steps.append("SIGKILL")
        kill(-process.pid, SIGKILL)
        process.signal(SIGKILL)
        _ = await exited(within: .seconds(10))
        return steps
    }
}
