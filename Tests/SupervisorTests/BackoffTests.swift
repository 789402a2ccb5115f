import Glibc
import Logging
import Shared
import Testing

@testable import vde_supervisor

/// The worker restart loop, run against a stand-in worker: a shell script that answers `start`,
/// `shutdown` and anything else (as a ping) with success, or exits at once (a worker that cannot come back) once a file exists.
@Suite(.serialized)
struct WorkerRestartLoopTests {
    /// Makes the stand-in in a fresh directory; returns its directory.
    private func makeStandIn() throws -> String {
        var template = Array("/tmp/vde-backoff-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw StandInError("mkdtemp failed") }
        let directory = String(cString: made)
        let script = """
            #!/bin/sh
            echo spawn >> \(directory)/spawns
            [ -e \(directory)/fail ] && exit 1
            while read -r line; do
                id=$(printf '%s' "$line" | sed -n 's/.*"id":\\([0-9]*\\).*/\\1/p')
                case "$line" in
                *'"command":{"start"'*) reply='{"started":{"endpoints":[],"switch":{"ctlDir":"/x","numPorts":4,"owned":false}}}' ;;
                *'"command":{"shutdown"'*) reply='{"stopped":{}}' ;;
                *) reply='{"pong":{}}' ;;
                esac
                printf '{"v":4,"id":%s,"reply":%s}\\n' "$id" "$reply"
            done

            """
        try write(script, to: directory + "/worker", mode: 0o755)
        return directory
    }

    private func write(_ text: String, to path: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StandInError("cannot create \(path)") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw StandInError("cannot write \(path)")
        }
    }

    private func spawns(in directory: String) -> Int {
        guard let file = fopen(directory + "/spawns", "r") else { return 0 }
        defer { fclose(file) }
        var count = 0
        while true {
            let c = fgetc(file)
            if c == EOF { break }
            if c == 0x0a { count += 1 }
        }
        return count
    }

    /// A worker that once ran longer than `stableAfter` and then cannot come back must be retried
    /// with growing delays. The old backoff measured "ran for" from the last successful start on
    /// every retry, so each retry after a long run came at once: hundreds of spawns a second.
    @Test func aWorkerThatCannotComeBackAfterALongRunIsRetriedWithGrowingDelays() async throws {
        // As the supervisor does: a write to a worker that just died must not kill the process.
        signal(SIGPIPE, SIG_IGN)
        let directory = try makeStandIn()
        defer { _ = Glibc.system("rm -rf -- '\(directory)'") }
        let networkID = NetworkID(stringLiteral: String(repeating: "ab", count: 32))
        // An existing switch at a socket_dir of the test's; the paths as the supervisor computes them.
        let paths = try NetworkPaths(
            runDir: directory, network: networkID, options: NetworkOptions(socketDir: directory + "/sw"))
        let spec = try SwitchSpec(paths: paths, mode: .external, group: nil, numPorts: 4)
        let assignment = NetworkWorker.Assignment(switchSpec: spec, endpoints: [])
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let worker = NetworkWorker(
            networkID: networkID, executable: directory + "/worker", runDir: directory,
            logLevel: .error, logger: logger,
            assignment: { assignment }, onStarted: { _ in }, onEvent: { _ in },
            backoff: RestartBackoff(initial: .milliseconds(100), maximum: .seconds(30), stableAfter: .milliseconds(200))
        )
        _ = try await worker.start(assignment)
        let pid = try #require(await worker.workerPID)
        // The run that counts as healthy: longer than stableAfter.
        try await Task.sleep(for: .milliseconds(400))
        try write("", to: directory + "/fail", mode: 0o644)
        kill(pid, SIGKILL)

        // Delays 0, 100, 200, 400, 800 ms: within 1.5 s at most 5 attempts after the first spawn.
        let deadline = ContinuousClock.now + .seconds(5)
        while spawns(in: directory) < 2, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(spawns(in: directory) >= 2, "the worker was not restarted")
        try await Task.sleep(for: .milliseconds(1500))
        let total = spawns(in: directory)
        await worker.stop()
        #expect(total <= 8, "\(total) spawns in 1.5 s: the restart loop does not back off")
        #expect(await worker.phase == .stopped)
    }
}

private struct StandInError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
