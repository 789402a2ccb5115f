import Foundation
import Synchronization

/// The real docker CLI against the real dockerd. `/usr/bin/docker` is Debian's 20.10 client,
/// which matches the dockerd that scripts/start-docker runs.
enum Docker {
    static let cli = "/usr/bin/docker"
    static let image = "vde-test-busybox:latest"
    /// Label on everything the tests create, so a later run can remove leftovers.
    static let label = "vde-acceptance=1"

    static func run(_ args: [String], timeout: Duration = .seconds(120)) async throws -> CommandResult {
        try await Command.run([cli] + args, timeout: timeout)
    }

    @discardableResult
    static func check(_ args: [String], timeout: Duration = .seconds(120)) async throws -> CommandResult {
        try await Command.check([cli] + args, timeout: timeout)
    }

    /// Fails with a clear message unless dockerd answers and the test image exists.
    static func checkEnvironment() async throws {
        try HostRequirements.check()
        guard FileManager.default.isExecutableFile(atPath: cli) else {
            throw AcceptanceFailure("\(cli) is missing: \(runScriptsTestHint)")
        }
        let info = try await Command.run([cli, "info", "--format", "{{.ServerVersion}}"], timeout: .seconds(30))
        guard info.succeeded else {
            throw AcceptanceFailure("dockerd does not answer (`docker info` failed): \(runScriptsTestHint)\n\(info)")
        }
        let image = try await Command.run(
            [cli, "image", "inspect", "--format", "{{.Id}}", Docker.image], timeout: .seconds(30))
        guard image.succeeded else {
            throw AcceptanceFailure("image \(Docker.image) is missing: \(runScriptsTestHint)\n\(image)")
        }
    }

    /// Removes containers and networks that earlier, interrupted runs left (by label).
    /// Call it with the plugin serving, so dockerd can reach the driver.
    static func removeLabelledLeftovers() async {
        if let ids = try? await run(["ps", "-aq", "--filter", "label=\(label)"], timeout: .seconds(30)), ids.succeeded {
            let list = ids.stdout.split(whereSeparator: \.isNewline).map(String.init)
            if !list.isEmpty { _ = try? await run(["rm", "-f"] + list) }
        }
        if let ids = try? await run(["network", "ls", "-q", "--filter", "label=\(label)"], timeout: .seconds(30)),
            ids.succeeded
        {
            for id in ids.stdout.split(whereSeparator: \.isNewline).map(String.init) {
                _ = try? await run(["network", "rm", id])
            }
        }
    }
}

extension Docker {
    /// The attachment of `container` (a name or ID) to the network named `network`, from `docker inspect`.
    static func attachment(container: String, network: String) async throws -> Attachment {
        let result = try await check(
            ["inspect", "--format", "{{json .NetworkSettings.Networks}}", container], timeout: .seconds(30))
        guard let all = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
            let net = all[network] as? [String: Any]
        else {
            throw AcceptanceFailure("container \(container) is not attached to \(network): \(result.stdout)")
        }
        return Attachment(
            endpointID: net["EndpointID"] as? String ?? "", ipAddress: net["IPAddress"] as? String ?? "",
            macAddress: net["MacAddress"] as? String ?? "", gateway: net["Gateway"] as? String ?? "")
    }
}

/// What `docker inspect` says about a container's attachment to one network.
struct Attachment: Sendable {
    var endpointID: String
    var ipAddress: String
    var macAddress: String
    var gateway: String
    var tap: String { Requests.tap(of: endpointID) }
}

/// The containers and networks one test made; removes them all at the end, also on failure.
final class DockerScope: Sendable {
    let tag = IDs.tag(6)
    private let made = Mutex<(containers: [String], networks: [String])>(([], []))
    /// Endpoint IDs of containers seen during the test (their taps must go away).
    let endpoints = Mutex<[String]>([])

    func name(_ base: String) -> String { "vdeacc-\(tag)-\(base)" }

    /// `docker network create -d vde ... NAME`; returns the result whether or not it worked.
    func createNetwork(_ base: String, _ args: [String]) async throws -> CommandResult {
        let name = name(base)
        let result = try await Docker.run(["network", "create", "-d", "vde", "--label", Docker.label] + args + [name])
        if result.succeeded { made.withLock { $0.networks.append(name) } }
        return result
    }

    /// Like ``createNetwork(_:_:)`` and requires success; returns the network's full ID.
    @discardableResult
    func network(_ base: String, _ args: [String]) async throws -> String {
        let result = try await createNetwork(base, args)
        guard result.succeeded else { throw AcceptanceFailure("docker network create failed: \(result)") }
        return result.stdout.trimmingWhitespace
    }

    /// Removes the container `name` (a full name) at the end of the test.
    func track(container name: String) { made.withLock { $0.containers.append(name) } }

    /// `docker run -d --net NET [--ip IP] IMAGE sleep 600`; returns the result.
    func startContainer(_ base: String, network: String, ip: String? = nil, extra: [String] = []) async throws
        -> CommandResult
    {
        let name = name(base)
        made.withLock { $0.containers.append(name) }  // docker run -d may create it even when start fails
        var args = ["run", "-d", "--name", name, "--label", Docker.label, "--net", self.name(network)]
        if let ip { args += ["--ip", ip] }
        return try await Docker.run(args + extra + [Docker.image, "sleep", "600"])
    }

    /// Like ``startContainer`` and requires it to run; returns its attachment to `network`.
    @discardableResult
    func container(_ base: String, network: String, ip: String? = nil) async throws -> Attachment {
        let result = try await startContainer(base, network: network, ip: ip)
        guard result.succeeded else { throw AcceptanceFailure("docker run failed: \(result)") }
        return try await attachment(base, network: network)
    }

    func attachment(_ base: String, network: String) async throws -> Attachment {
        let attachment = try await Docker.attachment(container: name(base), network: name(network))
        if !attachment.endpointID.isEmpty { endpoints.withLock { $0.append(attachment.endpointID) } }
        return attachment
    }

    /// `docker exec NAME argv...` (the result, whatever the exit status).
    func exec(_ base: String, _ argv: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
        try await Docker.run(["exec", name(base)] + argv, timeout: timeout)
    }

    /// busybox ping inside a container.
    func ping(from base: String, _ address: String, count: Int = 3, wait: Int = 2) async throws -> CommandResult {
        try await exec(
            base, ["ping", "-c", "\(count)", "-W", "\(wait)", address], timeout: .seconds(Double(count * wait + 20)))
    }

    func removeContainer(_ base: String) async throws {
        try await Docker.check(["rm", "-f", name(base)])
        made.withLock { $0.containers.removeAll { $0 == name(base) } }
    }

    func removeNetwork(_ base: String) async throws {
        try await Docker.check(["network", "rm", name(base)])
        made.withLock { $0.networks.removeAll { $0 == name(base) } }
    }

    /// Removes everything left; returns what failed.
    func cleanup() async -> [String] {
        let (containers, networks) = made.withLock { ($0.containers, $0.networks) }
        var failures: [String] = []
        for c in containers.reversed() {
            if let r = try? await Docker.run(["rm", "-f", c]), !r.succeeded, !r.stderr.contains("No such container") {
                failures.append(r.description)
            }
        }
        for n in networks.reversed() {
            if let r = try? await Docker.run(["network", "rm", n]), !r.succeeded { failures.append(r.description) }
        }
        made.withLock { $0 = ([], []) }
        return failures
    }

    /// Runs `body` with a scope and cleans up after it, also when it failed.
    static func with<T: Sendable>(_ body: (DockerScope) async throws -> T) async throws -> T {
        let scope = DockerScope()
        let value: T
        do {
            value = try await body(scope)
        } catch {
            let failures = await scope.cleanup()
            if !failures.isEmpty { print("docker cleanup after a failed test also failed: \(failures)") }
            throw error
        }
        let failures = await scope.cleanup()
        guard failures.isEmpty else {
            throw AcceptanceFailure("docker cleanup failed: \(failures.joined(separator: "\n"))")
        }
        return value
    }
}
