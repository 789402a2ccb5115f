import Foundation

/// One project of Debian's docker-compose 1.29 on a compose file, against the real dockerd:
/// runs its commands, finds its services' containers and networks, and takes everything down
/// afterwards, also when the test failed.
struct ComposeProject: Sendable {
    static let cli = "/usr/bin/docker-compose"
    /// Every test project's name starts with this, so a later run finds what an interrupted
    /// one left (compose labels its containers and networks with the project's name).
    static let prefix = "vdeacc"
    static let projectLabel = "com.docker.compose.project"

    let name: String
    let file: String

    /// Fails with what to run unless docker-compose is installed.
    static func checkEnvironment() throws {
        guard FileManager.default.isExecutableFile(atPath: cli) else {
            throw AcceptanceFailure("\(cli) is missing (Debian package docker-compose): run scripts/install-deps")
        }
    }

    /// `docker-compose -p NAME -f FILE args...` (the result, whatever the exit status).
    func run(_ args: [String], timeout: Duration = .seconds(180)) async throws -> CommandResult {
        try await Command.run([Self.cli, "--ansi", "never", "-p", name, "-f", file] + args, timeout: timeout)
    }

    /// The container ID of `service` (its one replica); fails when it has none. Asks docker for
    /// compose's labels: `docker-compose ps` costs a Python start-up (over a second here).
    func container(_ service: String) async throws -> String {
        let result = try await Docker.run(
            [
                "ps", "-q", "--filter", "label=\(Self.projectLabel)=\(name)",
                "--filter", "label=com.docker.compose.service=\(service)",
            ], timeout: .seconds(30))
        let id = result.stdout.trimmingWhitespace
        guard result.succeeded, !id.isEmpty, !id.contains("\n") else {
            throw AcceptanceFailure("no single container for service \(service): \(result)")
        }
        return id
    }

    /// Docker's name for the compose file's network `key` (compose 1.29: `PROJECT_KEY`).
    func network(_ key: String) -> String { name + "_" + key }

    /// IDs of the containers and networks that carry this project's label.
    func labelled() async throws -> (containers: [String], networks: [String]) {
        let filter = "label=\(Self.projectLabel)=\(name)"
        let containers = try await Docker.check(["ps", "-aq", "--filter", filter], timeout: .seconds(30))
        let networks = try await Docker.check(["network", "ls", "-q", "--filter", filter], timeout: .seconds(30))
        return (containers.stdout.lines, networks.stdout.lines)
    }

    /// Runs `body` on a fresh project of `file`; `down` afterwards, whatever happened (a no-op
    /// when the test took it down itself).
    static func with<T: Sendable>(file: String, _ body: (ComposeProject) async throws -> T) async throws -> T {
        let project = ComposeProject(name: prefix + IDs.tag(8), file: file)
        let value: T
        do {
            value = try await body(project)
        } catch {
            let down = try? await project.run(["down", "--timeout", "0", "--remove-orphans"])
            if let down, !down.succeeded { print("docker-compose down after a failed test also failed: \(down)") }
            await removeLeftovers()
            throw error
        }
        let down = try await project.run(["down", "--timeout", "0", "--remove-orphans"])
        guard down.succeeded else { throw AcceptanceFailure("docker-compose down failed: \(down)") }
        return value
    }

    /// Removes containers and networks of test projects that earlier, interrupted runs left.
    /// Call it with the plugin serving, so dockerd can reach the driver.
    static func removeLeftovers() async {
        let format = "{{.ID}} {{.Label \"\(projectLabel)\"}}"
        func ours(_ listing: CommandResult?) -> [String] {
            guard let listing, listing.succeeded else { return [] }
            return listing.stdout.lines.compactMap { line in
                let fields = line.split(separator: " ")
                guard fields.count == 2, fields[1].hasPrefix(prefix) else { return nil }
                return String(fields[0])
            }
        }
        let containers = ours(
            try? await Docker.run(
                ["ps", "-a", "--filter", "label=\(projectLabel)", "--format", format], timeout: .seconds(30)))
        if !containers.isEmpty { _ = try? await Docker.run(["rm", "-f"] + containers) }
        let networks = ours(
            try? await Docker.run(
                ["network", "ls", "--filter", "label=\(projectLabel)", "--format", format], timeout: .seconds(30)))
        for id in networks { _ = try? await Docker.run(["network", "rm", id]) }
    }
}

extension String {
    /// The non-empty lines.
    fileprivate var lines: [String] { split(whereSeparator: \.isNewline).map(String.init) }
}
