import Glibc
import Logging
import Shared
import Testing

@testable import vde_supervisor

/// Hang detection (``NetworkWorker/checkAlive()``), against a stand-in worker: a shell script
/// that answers `start` and `shutdown`, and answers pings only while no file `hang` exists.
@Suite(.serialized)
struct WorkerLivenessTests {
    private static let pingTimeout: Duration = .milliseconds(200)

    private func makeStandIn() throws -> String {
        var template = Array("/tmp/vde-liveness-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw StandInError("mkdtemp failed") }
        let directory = String(cString: made)
        let script = """
            #!/bin/sh
            echo spawn >> \(directory)/spawns
            while read -r line; do
                id=$(printf '%s' "$line" | sed -n 's/.*"id":\\([0-9]*\\).*/\\1/p')
                case "$line" in
                *'"command":{"start"'*) reply='{"started":{"endpoints":[],"switch":{"ctlDir":"/x","numPorts":4,"owned":false}}}' ;;
                *'"command":{"shutdown"'*) printf '{"v":4,"id":%s,"reply":{"stopped":{}}}\\n' "$id"; exit 0 ;;
                *) [ -e \(directory)/hang ] && continue; reply='{"pong":{}}' ;;
                esac
                printf '{"v":4,"id":%s,"reply":%s}\\n' "$id" "$reply"
            done

            """
        let path = directory + "/worker"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        guard fd >= 0 else { throw StandInError("cannot create \(path)") }
        defer { close(fd) }
        let bytes = Array(script.utf8)
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw StandInError("cannot write \(path)")
        }
        return directory
    }

    private func startWorker(in directory: String) async throws -> NetworkWorker {
        signal(SIGPIPE, SIG_IGN)
        let networkID = try NetworkID(String(repeating: "cd", count: 32))
        // An existing switch at a socket_dir of the test's; the paths as the supervisor computes them.
        let paths = try NetworkPaths(
            runDir: directory, network: networkID, options: NetworkOptions(socketDir: directory + "/sw"))
        let spec = try SwitchSpec(paths: paths, mode: .external, group: nil, numPorts: 4)
        let assignment = NetworkWorker.Assignment(switchSpec: spec, endpoints: [])
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let worker = NetworkWorker(
            networkID: networkID, executable: directory + "/worker", runDir: directory,
            logLevel: .error, logger: logger, assignment: { assignment }, onStarted: { _ in }, onEvent: { _ in },
            pingTimeout: Self.pingTimeout)
        _ = try await worker.start(assignment)
        return worker
    }

    /// Waits until the worker runs with another pid than `pid` (restarted), or the deadline passes.
    private func waitForReplacement(of pid: Int32, _ worker: NetworkWorker) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if await worker.phase == .running, let now = await worker.workerPID, now != pid { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test func aWorkerThatAnswersIsLeftAlone() async throws {
        let directory = try makeStandIn()
        defer { _ = Glibc.system("rm -rf -- '\(directory)'") }
        let worker = try await startWorker(in: directory)
        let pid = try #require(await worker.workerPID)
        await worker.checkAlive()
        #expect(await worker.workerPID == pid)
        #expect(await worker.restarts == 0)
        await worker.stop()
    }

    @Test func aWorkerThatMissesThreePingsIsKilledAndRestarted() async throws {
        let directory = try makeStandIn()
        defer { _ = Glibc.system("rm -rf -- '\(directory)'") }
        let worker = try await startWorker(in: directory)
        let pid = try #require(await worker.workerPID)
        _ = Glibc.system("touch '\(directory)/hang'")
        await worker.checkAlive()
        #expect(try await waitForReplacement(of: pid, worker), "the hung worker was not replaced")
        let lastError = await worker.lastError
        #expect(lastError?.contains("heartbeats missed") == true, "\(String(describing: lastError))")
        await worker.stop()
    }

    /// No periodic ping needed: a command that times out checks its worker at once.
    @Test func aCommandThatTimesOutChecksTheWorker() async throws {
        let directory = try makeStandIn()
        defer { _ = Glibc.system("rm -rf -- '\(directory)'") }
        let worker = try await startWorker(in: directory)
        let pid = try #require(await worker.workerPID)
        _ = Glibc.system("touch '\(directory)/hang'")
        await #expect(throws: WorkerTimeout.self) { _ = try await worker.status(timeout: .milliseconds(100)) }
        #expect(try await waitForReplacement(of: pid, worker), "the worker that did not answer was not replaced")
        await worker.stop()
    }
}

private struct StandInError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
