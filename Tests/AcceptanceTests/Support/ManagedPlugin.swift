import Foundation
import Glibc

/// The managed plugin `vde-supervisor:latest`, made by `docker plugin create` from the plugin
/// directory `scripts/build-plugin --dir-only` leaves in dist/plugin (docs/managed-plugin.md).
struct ManagedPlugin: Sendable {
    static let name = "vde-supervisor:latest"
    static var directory: String { Repository.file("dist/plugin") }
    /// Where the plugin's own switches live: the host's /run is the plugin's.
    static let runDir = "/run/vde-supervisor"

    /// dockerd's ID of the plugin.
    let id: String
    /// How long `docker plugin enable` took.
    let enableTime: Duration

    /// `docker plugin inspect` with a Go template.
    static func inspect(_ format: String) async throws -> CommandResult {
        try await Docker.run(["plugin", "inspect", "--format", format, name], timeout: .seconds(30))
    }

    /// Fails with what to run unless the plugin directory is built, no plugin of that name
    /// exists and no supervisor serves the plugin's run dir.
    static func checkEnvironment() async throws {
        try await Docker.checkEnvironment()
        for file in ["config.json", "rootfs/usr/bin/vde-supervisor", "rootfs/usr/bin/tini"]
        where !TempDir.exists(directory + "/" + file) {
            throw AcceptanceFailure(
                "\(directory)/\(file) is missing: run scripts/build-plugin --dir-only (\(runScriptsTestHint))")
        }
        if try await inspect("{{.Id}}").succeeded {
            throw AcceptanceFailure(
                "a plugin \(name) already exists (scripts/build-plugin creates one): remove it first (docker plugin disable \(name); docker plugin rm \(name))"
            )
        }
        if UnixHTTPClient.answers(socket: runDir + "/control.sock") {
            throw AcceptanceFailure(
                "a vde-supervisor already serves \(runDir) (installed on this host?): stop it first")
        }
    }

    /// Creates and enables the plugin, runs `body`, then disables and removes it (also when
    /// `body` failed); the disable must leave no process, tap, socket or directory of the plugin.
    static func with<T: Sendable>(_ body: (ManagedPlugin) async throws -> T) async throws -> T {
        try await checkEnvironment()
        try await Docker.check(["plugin", "create", name, directory], timeout: .seconds(300))
        let value: T
        do {
            let id = try await inspect("{{.Id}}").stdout.trimmingWhitespace
            let clock = ContinuousClock()
            let started = clock.now
            try await Docker.check(["plugin", "enable", name], timeout: .seconds(60))
            value = try await body(ManagedPlugin(id: id, enableTime: clock.now - started))
        } catch {
            print("---- dockerd's lines of the plugin ----\n\(pluginLog())\n---- end ----")
            _ = try? await Docker.run(["plugin", "disable", "--force", name])
            _ = try? await Docker.run(["plugin", "rm", "--force", name])
            throw error
        }
        _ = try await Docker.check(["plugin", "disable", name], timeout: .seconds(60))
        try await Docker.check(["plugin", "rm", name], timeout: .seconds(60))
        return value
    }

    /// The plugin's output, as dockerd logs it (scripts/start-docker's log), for failures.
    static func pluginLog(lines: Int = 60) -> String {
        guard let log = TempDir.readText("/var/log/vde-supervisor-dockerd.log") else { return "" }
        return log.split(separator: "\n").filter { $0.contains("plugin=") }.suffix(lines).joined(separator: "\n")
    }
}
