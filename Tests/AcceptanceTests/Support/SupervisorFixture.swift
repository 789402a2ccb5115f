import Foundation
import Glibc
import Shared
import Subprocess
import Testing

/// A running `vde-supervisor` with its own socket, state dir and run dir.
struct Supervisor: Sendable {
    let socket: String
    let stateDir: String
    let runDir: String
    let logPath: String
    let process: BackgroundProcess
    let client: PluginClient

    /// The bytes of the state files (`state.json` and its journal), or nil when neither exists.
    func stateBytes() -> [UInt8]? { StoredState.bytes(stateDir: stateDir) }
    /// The stored state as JSON text (the snapshot with the journal applied; ``StoredState``).
    func stateText() -> String { StoredState.text(stateDir: stateDir) }
    /// The network's paths as this supervisor computes them (``NetworkPaths``), for `options`
    /// (by default its own switch).
    func paths(network: String, options: NetworkOptions = NetworkOptions()) throws -> NetworkPaths {
        try NetworkPaths(runDir: runDir, network: NetworkID(network), options: options)
    }
    /// The ctl dir of the network's own switch.
    func switchDir(network: String) throws -> String { try paths(network: network).ctlDir }
    func logTail(_ bytes: Int = 6000) -> String { process.logTail(bytes) }

    /// Fails unless the supervisor still answers (`NetworkDriver.GetCapabilities`).
    func assertServes() async throws {
        let reply = try await client.post("/NetworkDriver.GetCapabilities")
        guard reply.status == 200 else {
            throw AcceptanceFailure(
                "supervisor no longer serves GetCapabilities: \(reply)\n--- supervisor log ---\n\(logTail())")
        }
    }
}

/// Starts a supervisor for a test and stops it afterwards: SIGTERM, and it must exit 0
/// within the deadline; then `vde-supervisor stop-networks` stops the workers it left running.
/// Leftover VDE processes and taps of the test are removed (and reported) even when the test
/// failed.
enum SupervisorFixture {
    /// The socket dockerd discovers the `vde` plugin by.
    static let realSocket = "/run/docker/plugins/vde.sock"

    /// - Parameters:
    ///   - socket: nil for a private socket in the fixture's directory; ``realSocket`` for Docker tests.
    ///   - directory: where state, run dir, control socket and log go; nil for a fresh temp dir
    ///     removed afterwards. Pass the same directory twice to restart a supervisor on its state.
    static func with<T: Sendable>(
        socket: String? = nil,
        directory: String? = nil,
        extraArguments: [String] = [],
        _ body: (Supervisor) async throws -> T
    ) async throws -> T {
        try HostRequirements.check()
        if let directory { return try await with(socket: socket, in: directory, extraArguments: extraArguments, body) }
        return try await TempDir.with("sup") { dir in
            try await with(socket: socket, in: dir, extraArguments: extraArguments, body)
        }
    }

    private static func with<T: Sendable>(
        socket: String?, in dir: String, extraArguments: [String], _ body: (Supervisor) async throws -> T
    ) async throws -> T {
        let supervisorPath = try Binaries.supervisor
        let networkerPath = try Binaries.networker
        // The real plugin socket is one per machine: benchmarks take the same lock.
        let lock = socket != nil ? try await SharedSocketLock.acquire() : nil
        defer { lock?.release() }
        do {
            let socketPath = socket ?? dir + "/vde.sock"
            if socket != nil { try prepareSharedSocket(socketPath) }
            var logPath = dir + "/supervisor.log"
            var generation = 1
            while TempDir.exists(logPath) {
                generation += 1
                logPath = dir + "/supervisor-\(generation).log"
            }
            let stateDir = dir + "/state"
            let runDir = dir + "/run"
            let argv =
                [
                    supervisorPath, "run", "--socket", socketPath, "--state-dir", stateDir,
                    "--run-dir", runDir, "--log-level", "debug", "--networker", networkerPath,
                    // Private control socket and no config file: tests do not touch a real install.
                    "--control-socket", dir + "/control.sock", "--config", dir + "/absent.conf",
                ] + extraArguments
            let client = PluginClient(socket: socketPath)
            let started = try await Background.with(
                argv, logPath: logPath, stop: .terminate, graceDeadline: .seconds(20)
            ) { process in
                let supervisor = Supervisor(
                    socket: socketPath, stateDir: stateDir, runDir: runDir,
                    logPath: logPath, process: process, client: client)
                do {
                    try await Poll.until("vde-supervisor to answer on \(socketPath)", deadline: .seconds(20)) {
                        guard process.isRunning else {
                            throw AcceptanceFailure("vde-supervisor exited during start-up:\n\(process.logTail())")
                        }
                        return UnixHTTPClient.answers(socket: socketPath)
                    }
                    return try await body(supervisor)
                } catch {
                    print(
                        "---- vde-supervisor log (\(logPath)) after failure: \(error) ----\n\(process.logTail())\n---- end of log ----"
                    )
                    throw error
                }
            }
            // SIGTERM leaves the workers running (the data path outlives the supervisor);
            // `stop-networks` stops each with its switch and plugs, and must leave nothing.
            if let failure = await stopNetworks(stateDir: stateDir, runDir: runDir) { Issue.record(failure) }
            let leftovers = await removeLeftovers(runDir: runDir, seen: client.seen)
            let orphans = leftovers.filter { $0.hasPrefix("process") }
            if !orphans.isEmpty {
                Issue.record(
                    AcceptanceFailure(
                        "processes outlived `vde-supervisor stop-networks` (killed now): \(orphans.joined(separator: "; "))"
                    ))
            }
            if !leftovers.isEmpty {
                print("note: removed after the supervisor stopped: \(leftovers.joined(separator: "; "))")
            }
            guard case .exited(0) = started.status, started.stopSteps == ["SIGTERM"] else {
                let log = TempDir.readText(logPath).map { String($0.suffix(4000)) } ?? ""
                let stop = AcceptanceFailure(
                    "vde-supervisor did not stop cleanly on SIGTERM: steps \(started.stopSteps), status \(started.status)\n--- log ---\n\(log)"
                )
                // Recorded, not thrown: the test fails, and a test that goes on (a restart) still
                // shows what else works.
                Issue.record(stop)
                return try started.outcome.get()
            }
            return try started.outcome.get()
        }
    }

    /// The shared plugin socket may not already serve another plugin; a stale file is removed.
    private static func prepareSharedSocket(_ path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        guard TempDir.exists(path) else { return }
        if UnixHTTPClient.answers(socket: path) {
            throw AcceptanceFailure(
                "something already serves \(path) (a vde-supervisor started by hand?): stop it before running the Docker tests"
            )
        }
        unlink(path)
    }

    /// Runs `vde-supervisor stop-networks` on a stopped supervisor's state dir and run dir: every
    /// worker it left (and their switches and plugs) stops; in `namespace` when the supervisor
    /// ran there. A failure text, or nil.
    static func stopNetworks(stateDir: String, runDir: String, in namespace: NetNS? = nil) async
        -> AcceptanceFailure?
    {
        do {
            let result = try await Command.run(
                NetNS.exec(in: namespace) + [
                    try Binaries.supervisor, "stop-networks", "--state-dir", stateDir, "--run-dir", runDir,
                    "--networker", try Binaries.networker,
                ], timeout: .seconds(60))
            return result.succeeded ? nil : AcceptanceFailure("vde-supervisor stop-networks failed: \(result)")
        } catch {
            return AcceptanceFailure("vde-supervisor stop-networks could not run: \(error)")
        }
    }

    /// Kills VDE processes that still mention the test's run dir or IDs and deletes taps of its
    /// endpoints, so that a failed test leaves nothing behind. Returns what it removed.
    static func removeLeftovers(runDir: String, seen: PluginClient.SeenIDs) async -> [String] {
        var removed: [String] = []
        let needles = [runDir] + seen.networks.map { "--network-id \($0)" } + seen.networks
        // Give a clean shutdown a moment to finish by itself first.
        _ = try? await Poll.until("VDE processes of this test to exit", deadline: .seconds(10)) {
            HostInspector.vdeProcesses(mentioning: needles).isEmpty
        }
        for p in HostInspector.vdeProcesses(mentioning: needles) {
            removed.append("process \(p)")
            kill(p.pid, SIGTERM)
        }
        _ = try? await Poll.until("leftover VDE processes to exit after SIGTERM", deadline: .seconds(5)) {
            HostInspector.vdeProcesses(mentioning: needles).isEmpty
        }
        for p in HostInspector.vdeProcesses(mentioning: needles) { kill(p.pid, SIGKILL) }
        // An ID the plugin refused got no tap.
        for endpoint in seen.endpoints.compactMap({ try? EndpointID($0) }) {
            let tap = TapName(endpoint: endpoint).rawValue
            if HostInspector.linkExists(tap) {
                removed.append("tap \(tap)")
                _ = try? await Command.run([NetNS.ip, "link", "del", tap], timeout: .seconds(10))
            }
        }
        return removed
    }
}

/// An exclusive `flock` on /run/vde-docker-plugin.lock, held while a test (or `bench/run`)
/// serves the real plugin socket.
struct SharedSocketLock: Sendable {
    static let path = "/run/vde-docker-plugin.lock"
    let fd: Int32

    static func acquire(deadline: Duration = .seconds(1800)) async throws -> SharedSocketLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AcceptanceFailure("cannot open \(path): errno \(errno)") }
        let start = ContinuousClock.now
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if ContinuousClock.now - start > deadline {
                close(fd)
                throw AcceptanceFailure(
                    "\(path) stayed locked for \(deadline) (a benchmark using the real plugin socket?)")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        return SharedSocketLock(fd: fd)
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
