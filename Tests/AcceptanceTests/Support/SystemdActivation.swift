import Foundation
import Glibc
import Subprocess

/// A `vde-supervisor run` behind `systemd-socket-activate`, with a ``NotifyListener`` as its
/// NOTIFY_SOCKET and a WATCHDOG_USEC: systemd's side of both protocols, played by the test.
struct ActivatedSupervisor: Sendable {
    let dir: String
    let socket: String
    let logPath: String
    let supervisorPath: String
    let networkerPath: String
    let process: BackgroundProcess
    let listener: NotifyListener

    /// What the run left once the process ended and the listener read everything queued.
    struct Finished: Sendable {
        let status: TerminationStatus
        let stopSteps: [String]
        let messages: [NotifyMessage]
        let transcript: String
        let log: String
    }

    func logText() -> String { TempDir.readText(logPath) ?? "" }

    /// Starts `systemd-socket-activate -l SOCKET -E NOTIFY_SOCKET=... -E WATCHDOG_USEC=... --
    /// vde-supervisor run ...` with private paths and an absent config file, runs `body`, and
    /// stops it (SIGTERM unless `body` already ended it). Everything is removed afterwards,
    /// also on failure, when the notify messages and the log are printed.
    static func with(
        _ tag: String, watchdogUsec: Int,
        onMessage: (@Sendable (NotifyMessage) -> Void)? = nil,
        _ body: (ActivatedSupervisor) async throws -> Void
    ) async throws -> Finished {
        try HostRequirements.check()
        try SystemdTools.require([SystemdTools.socketActivate])
        let supervisorPath = try Binaries.supervisor
        let networkerPath = try Binaries.networker
        return try await TempDir.with(tag) { dir in
            let socket = dir + "/vde.sock"
            let logPath = dir + "/supervisor.log"
            let listener = try NotifyListener(path: dir + "/notify.sock", onMessage: onMessage)
            let argv = [
                SystemdTools.socketActivate, "-l", socket,
                "-E", "NOTIFY_SOCKET=\(listener.path)", "-E", "WATCHDOG_USEC=\(watchdogUsec)", "--",
                supervisorPath, "run", "--socket", socket, "--control-socket", dir + "/control.sock",
                "--state-dir", dir + "/state", "--run-dir", dir + "/run", "--networker", networkerPath,
                "--config", dir + "/absent.conf", "--log-level", "debug",
            ]
            let started: (outcome: Result<Void, any Error>, status: TerminationStatus, stopSteps: [String])
            do {
                started = try await Background.with(
                    argv, logPath: logPath, stop: .terminate, graceDeadline: .seconds(20)
                ) { process in
                    try await body(
                        ActivatedSupervisor(
                            dir: dir, socket: socket, logPath: logPath, supervisorPath: supervisorPath,
                            networkerPath: networkerPath, process: process, listener: listener))
                }
            } catch {
                await listener.stop()
                throw error
            }
            await listener.stop()  // reads whatever is still queued
            let log = TempDir.readText(logPath) ?? ""
            let finished = Finished(
                status: started.status, stopSteps: started.stopSteps, messages: listener.messages,
                transcript: listener.transcript(), log: log)
            if case .failure(let error) = started.outcome {
                print(
                    "---- sd_notify messages:\(finished.transcript)\n---- supervisor log ----\n\(log.suffix(6000))\n---- end ----"
                )
                throw error
            }
            if finished.status != .exited(0) {
                // A crash on the way out: keep what it said for whoever reads the test output.
                print("---- exit status \(finished.status); supervisor log ----\n\(log.suffix(6000))\n---- end ----")
            }
            return finished
        }
    }

    /// `/proc/PID/comm` of the process: the executable's name, at most 15 characters
    /// (`systemd-socket-` before the first connection, `vde-supervisor` after it).
    var command: String { (TempDir.readText("/proc/\(process.pid)/comm") ?? "").trimmingWhitespace }

    /// Arrival times of the WATCHDOG=1 messages from message `start` on.
    func watchdogTimes(from start: Int) -> [ContinuousClock.Instant] {
        listener.messages.dropFirst(start).filter { $0.lines.contains("WATCHDOG=1") }.map(\.time)
    }

    /// The first connection: waits until systemd-socket-activate listens, then activates the
    /// supervisor with `POST /Plugin.Activate` (empty body) and returns the reply.
    func activate() async throws -> HTTPReply {
        try await waitUntilListening()
        return try await UnixHTTPClient.post(socket: socket, path: "/Plugin.Activate", body: [], timeout: .seconds(30))
    }

    /// systemd-socket-activate binds and listens, then waits for the first connection.
    func waitUntilListening() async throws {
        try await Poll.until("systemd-socket-activate to listen on \(socket)") {
            guard process.isRunning else {
                throw AcceptanceFailure("systemd-socket-activate exited: \(process.logTail())")
            }
            return TempDir.exists(socket)
        }
    }

    /// SIGTERM, and waits until the process has exited.
    func terminate() async throws {
        process.signal(SIGTERM)
        try await Poll.until("the supervisor to exit after SIGTERM", deadline: .seconds(20), every: .milliseconds(50)) {
            !process.isRunning
        }
    }
}

extension Duration {
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
