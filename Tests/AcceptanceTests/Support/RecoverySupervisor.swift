import Foundation
import Glibc
import Shared
import Testing

/// What the recovery checks need from a running supervisor, whichever way it was started.
protocol RecoveryHost: Sendable {
    var client: PluginClient { get }
    var stateDir: String { get }
    var runDir: String { get }
    var controlSocket: String { get }
    /// The pid of the supervisor that runs now.
    var supervisorPID: Int32 { get }
    func logTail(_ bytes: Int) -> String
}

extension Supervisor: RecoveryHost {
    /// The fixture puts its control socket next to its plugin socket.
    var controlSocket: String { (socket as NSString).deletingLastPathComponent + "/control.sock" }
    var supervisorPID: Int32 { process.pid }
}

/// A supervisor that a test may kill with SIGKILL and start again on the same socket, state
/// dir and run dir, with the same arguments as ``SupervisorFixture`` uses; run inside a network
/// namespace when given one (`ip netns exec`, so its workers, switches, taps and uplinks live
/// there: host B of ``MultiHostLab``). The log of every incarnation goes to one file. At the end the last one must stop cleanly on SIGTERM,
/// `vde-supervisor stop-networks` stops the workers it left, and whatever a failed test left
/// (processes, taps) is removed.
final class RecoverySupervisor: RecoveryHost {
    let dir: String
    let socket: String
    let stateDir: String
    let runDir: String
    let logPath: String
    let argv: [String]
    let client: PluginClient
    /// Where it runs (nil: the test's own namespace); `stop-networks` runs there too.
    let namespace: NetNS?
    private let current = Locked<RecoverySpawned?>(nil)

    var controlSocket: String { dir + "/control.sock" }
    var supervisorPID: Int32 { current.value?.pid ?? -1 }
    var isRunning: Bool { current.value?.isRunning == true }
    func logTail(_ bytes: Int = 6000) -> String {
        TempDir.readText(logPath).map { String($0.suffix(bytes)) } ?? ""
    }

    private init(dir: String, supervisorPath: String, networkerPath: String, namespace: NetNS?) {
        self.dir = dir
        self.namespace = namespace
        socket = dir + "/vde.sock"
        stateDir = dir + "/state"
        runDir = dir + "/run"
        logPath = dir + "/supervisor.log"
        argv =
            NetNS.exec(in: namespace) + [
                supervisorPath, "run", "--socket", socket, "--state-dir", stateDir,
                "--run-dir", runDir, "--log-level", "debug", "--networker", networkerPath,
                "--control-socket", dir + "/control.sock", "--config", dir + "/absent.conf",
            ]
        client = PluginClient(socket: socket)
    }

    /// The paths this supervisor computes for `network` (created without options).
    func paths(network: String) throws -> NetworkPaths {
        try NetworkPaths(runDir: runDir, network: NetworkID(network), options: NetworkOptions())
    }

    /// Starts a supervisor (in `namespace`, when given), runs `body`, then stops it (SIGTERM; it
    /// must exit 0) and removes leftovers.
    static func with<T: Sendable>(in namespace: NetNS? = nil, _ body: (RecoverySupervisor) async throws -> T)
        async throws -> T
    {
        try HostRequirements.check()
        let supervisorPath = try Binaries.supervisor
        let networkerPath = try Binaries.networker
        return try await TempDir.with("rsup") { dir in
            let supervisor = RecoverySupervisor(
                dir: dir, supervisorPath: supervisorPath, networkerPath: networkerPath, namespace: namespace)
            let outcome: Result<T, any Error>
            do {
                try await supervisor.start()
                outcome = .success(try await body(supervisor))
            } catch {
                print(
                    "---- vde-supervisor log (\(supervisor.logPath)) after failure: \(error) ----\n\(supervisor.logTail())\n---- end of log ----"
                )
                outcome = .failure(error)
            }
            let stop = await supervisor.stopLast()
            // SIGTERM leaves the workers running; this stops them, their switches and plugs.
            if let failure = await SupervisorFixture.stopNetworks(
                stateDir: supervisor.stateDir, runDir: supervisor.runDir, in: namespace)
            {
                Issue.record(failure)
            }
            let leftovers = await SupervisorFixture.removeLeftovers(
                runDir: supervisor.runDir, seen: supervisor.client.seen)
            if !leftovers.isEmpty {
                print("note: removed after the supervisor stopped: \(leftovers.joined(separator: "; "))")
            }
            // As in SupervisorFixture: a process that outlived the supervisor's stop is a leak.
            let leaked = leftovers.filter { $0.hasPrefix("process") }
            if !leaked.isEmpty {
                Issue.record(
                    AcceptanceFailure(
                        "processes outlived `vde-supervisor stop-networks` (killed now): \(leaked.joined(separator: "; "))"
                    ))
            }
            let value = try outcome.get()
            if let stop { throw stop }
            return value
        }
    }

    /// Starts a supervisor with the same arguments and waits until it serves the plugin socket.
    /// Returns its pid.
    @discardableResult
    func start() async throws -> Int32 {
        if let running = current.value, running.isRunning {
            throw AcceptanceFailure("a supervisor (pid \(running.pid)) still runs; kill it first")
        }
        let process = try RecoverySpawned(argv, outputPath: logPath)
        current.set(process)
        try await Poll.until(
            "vde-supervisor (pid \(process.pid)) to answer on \(socket)", deadline: .seconds(20),
            every: .milliseconds(20)
        ) {
            guard process.isRunning else {
                throw AcceptanceFailure(
                    "vde-supervisor exited during start-up (wait status \(process.waitStatus ?? -1)):\n\(logTail())")
            }
            return UnixHTTPClient.answers(socket: socket)
        }
        return process.pid
    }

    /// SIGKILL to the supervisor alone (not its process group: its workers must notice by
    /// themselves), and reaps it. Returns its pid.
    @discardableResult
    func kill9() async throws -> Int32 {
        guard let process = current.value, process.isRunning else {
            throw AcceptanceFailure("no supervisor runs to be killed")
        }
        kill(process.pid, SIGKILL)
        guard await process.waitForExit(deadline: .seconds(10)) else {
            throw AcceptanceFailure("vde-supervisor (pid \(process.pid)) still runs 10 s after SIGKILL")
        }
        return process.pid
    }

    /// Stops the supervisor that runs now; an error when it did not exit 0 on SIGTERM.
    private func stopLast() async -> AcceptanceFailure? {
        guard let process = current.value, process.isRunning else { return nil }
        let steps = await process.stop(SIGTERM, grace: .seconds(20))
        let status = process.waitStatus ?? -1
        // WIFEXITED && WEXITSTATUS == 0 is a raw status of 0.
        guard steps == ["SIGTERM"], status == 0 else {
            return AcceptanceFailure(
                "vde-supervisor did not stop cleanly on SIGTERM: steps \(steps), wait status \(status)\n--- log ---\n\(logTail(4000))"
            )
        }
        return nil
    }
}
