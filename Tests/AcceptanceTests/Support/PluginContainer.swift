import Foundation
import Glibc

/// The plugin in container mode: the image `vde-supervisor:latest` (scripts/build-image) run
/// as README's `docker run` line gives it, serving the real plugin socket and the real run dir
/// `/run/vde-supervisor` (which must be empty or absent). The run dir is mounted at the same path
/// on both sides, as README has it: a VDE client tells the switch the path of its own data
/// socket, so a plug on the host reaches a switch in the container only when both see the same
/// paths (measured with the host's run dir elsewhere: `vde_open ...: Invalid argument`). The
/// state dir is the test's own host directory, so that the test touches no installation.
struct PluginContainer: Sendable {
    static let image = "vde-supervisor:latest"

    let name: String
    /// The host directories mounted at /run/vde-supervisor and /var/lib/vde-supervisor.
    let runDir: String
    let stateDir: String

    /// The capabilities the container needs, one by one (`--privileged` is refused here because
    /// dockerd lacks CAP_SYS_RESOURCE; and it would grant far more); the systemd unit's set.
    /// Measured by dropping each in turn (docs/container.md): without NET_ADMIN no tap is made;
    /// without SYS_ADMIN no tap is re-plugged inside a container (setns); without SYS_PTRACE
    /// `pidfd_getfd` fails and the worker looks at each tap once a second instead. NET_RAW
    /// sends the gratuitous ARP after a re-plug (busybox arping); CHOWN, FOWNER, DAC_OVERRIDE and
    /// KILL serve group-owned switch sockets and switches of other owners (not needed by this test).
    static let capabilities = [
        "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "NET_RAW", "KILL", "DAC_OVERRIDE", "FOWNER", "CHOWN",
    ]

    /// `docker run` of the image, as README gives it, with the test's own host directories.
    func runArguments() -> [String] {
        [
            "run", "-d", "--name", name, "--label", Docker.label, "--network", "host", "--pid", "host",
            "--cap-drop", "ALL",
        ] + Self.capabilities.flatMap { ["--cap-add", $0] } + [
            "--device", "/dev/net/tun",
            "-v", "/run/docker/plugins:/run/docker/plugins",
            "-v", "\(runDir):\(runDir):rshared",
            "-v", "\(stateDir):/var/lib/vde-supervisor",
            "-v", "/run/docker/netns:/run/docker/netns:rslave",
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-e", "LOG_LEVEL=debug",
            Self.image,
        ]
    }

    /// Waits until the plugin answers on the real socket (and the container still runs).
    func waitServing(deadline: Duration = .seconds(30)) async throws {
        try await Poll.until("the plugin container to serve \(SupervisorFixture.realSocket)", deadline: deadline) {
            guard try await isRunning() else {
                throw AcceptanceFailure("the plugin container stopped during start-up:\n\(try await logs())")
            }
            return UnixHTTPClient.answers(socket: SupervisorFixture.realSocket)
        }
    }

    func isRunning() async throws -> Bool {
        try await inspect("{{.State.Running}}") == "true"
    }

    func inspect(_ format: String) async throws -> String {
        try await Docker.check(["inspect", "--format", format, name], timeout: .seconds(30)).stdout.trimmingWhitespace
    }

    func logs() async throws -> String {
        let result = try await Docker.run(["logs", "--tail", "80", name], timeout: .seconds(30))
        return result.output
    }

    /// Runs `body` with the plugin container serving the real socket; afterwards stops it
    /// (`docker stop`: the supervisor stops the networks' processes), removes it, kills what
    /// of the test's networks still runs (reported), and removes the directories. Holds the
    /// real socket's lock and the mount propagation that the container's mounts need.
    static func with<T: Sendable>(_ body: (PluginContainer) async throws -> T) async throws -> T {
        try HostRequirements.check()
        let image = try await Docker.run(
            ["image", "inspect", "--format", "{{.Id}}", Self.image], timeout: .seconds(30))
        guard image.succeeded else {
            throw AcceptanceFailure("image \(Self.image) is missing: run scripts/build-image (as root)\n\(image)")
        }
        let lock = try await SharedSocketLock.acquire()
        defer { lock.release() }
        if UnixHTTPClient.answers(socket: SupervisorFixture.realSocket) {
            throw AcceptanceFailure(
                "something already serves \(SupervisorFixture.realSocket): stop it before running the container-mode tests"
            )
        }
        unlink(SupervisorFixture.realSocket)
        let runDir = "/run/vde-supervisor"
        let inRunDir = (try? FileManager.default.contentsOfDirectory(atPath: runDir)) ?? []
        guard inRunDir.isEmpty else {
            throw AcceptanceFailure(
                "\(runDir) is in use (\(inRunDir)): stop the vde-supervisor that runs there before the container-mode tests"
            )
        }
        let madeRunDir = !TempDir.exists(runDir)
        defer { if madeRunDir { rmdir(runDir) } }
        return try await SharedRootMount.with {
            try await TempDir.with("image") { dir in
                let plugin = PluginContainer(
                    name: "vdeacc-\(IDs.tag(6))-plugin", runDir: runDir, stateDir: dir + "/state")
                for path in [plugin.runDir, plugin.stateDir] {
                    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                }
                let outcome: Result<T, any Error>
                do {
                    try await Docker.check(plugin.runArguments())
                    try await plugin.waitServing()
                    outcome = .success(try await body(plugin))
                } catch {
                    print("---- plugin container log after failure: \(error) ----\n\((try? await plugin.logs()) ?? "")")
                    outcome = .failure(error)
                }
                _ = try? await Docker.run(["stop", plugin.name])
                _ = try? await Docker.run(["rm", "-f", plugin.name])
                return try outcome.get()
            }
        }
    }
}
