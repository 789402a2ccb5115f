import Foundation
import Glibc
import Shared

/// What the tests of the installed product (SystemdContainerTests, PackageTests) do inside a
/// systemd container: plugin calls through the unit's socket, the service's main pid, endpoints
/// in namespaces of their own, and a 10 ms probe between two of them.
extension SystemdContainer {
    static let pluginSocket = "/run/docker/plugins/vde.sock"

    /// `Plugin.Activate` through the socket with curl (the image has it).
    func curlActivate() async throws -> CommandResult {
        try await exec(
            [
                "curl", "-sS", "--fail", "--max-time", "30", "--unix-socket", Self.pluginSocket,
                "-X", "POST", "http://x/Plugin.Activate",
            ], timeout: .seconds(60))
    }

    /// One plugin call through curl; returns the HTTP status and the body.
    func pluginCall(_ path: String, _ request: some Encodable) async throws -> (status: Int, body: String) {
        let body = try JSONCoding.string(request)
        let reply = try await exec(
            [
                "curl", "-sS", "--max-time", "30", "--unix-socket", Self.pluginSocket,
                "-X", "POST", "--data-binary", body, "-w", "\n%{http_code}", "http://x" + path,
            ],
            timeout: .seconds(60))
        guard reply.succeeded, let last = reply.stdout.split(separator: "\n").last, let status = Int(last) else {
            throw AcceptanceFailure("curl \(path) failed: \(reply)")
        }
        return (status, String(reply.stdout.dropLast(last.count)))
    }

    /// Polls until the service is active (READY=1 seen) with a main pid other than `old`.
    func activeMainPID(other old: String? = nil, deadline: Duration = .seconds(30)) async throws -> String {
        try await Poll.value(
            "vde-supervisor.service active with a main pid\(old.map { " other than \($0)" } ?? "")",
            deadline: deadline, every: .milliseconds(200)
        ) {
            let state = try await property("ActiveState", of: "vde-supervisor.service")
            let sub = try await property("SubState", of: "vde-supervisor.service")
            let pid = try await property("MainPID", of: "vde-supervisor.service")
            guard state == "active", sub == "running", pid != "0", pid != old else { return nil }
            return pid
        }
    }

    /// An endpoint created and joined through the plugin, its tap moved into the new namespace
    /// `namespace` as eth0 with `address` (/24), the way dockerd does it.
    func joinInNamespace(network: String, endpoint: String, namespace: String, address: String) async throws {
        try await check(["ip", "netns", "add", namespace])
        let made = try await pluginCall(
            "/NetworkDriver.CreateEndpoint",
            Requests.createEndpoint(network: network, endpoint: endpoint, address: address + "/24"))
        guard made.status == 200 else { throw AcceptanceFailure("CreateEndpoint: \(made)") }
        let joined = try await pluginCall(
            "/NetworkDriver.Join",
            Requests.join(network: network, endpoint: endpoint, sandbox: "/run/netns/" + namespace))
        guard joined.status == 200 else { throw AcceptanceFailure("Join: \(joined)") }
        let tap = Requests.tap(of: endpoint)
        for argv in [
            ["ip", "link", "set", tap, "netns", namespace],
            ["ip", "-n", namespace, "link", "set", tap, "name", "eth0"],
            ["ip", "-n", namespace, "addr", "add", address + "/24", "dev", "eth0"],
            ["ip", "-n", namespace, "link", "set", "eth0", "up"],
        ] {
            try await check(argv)
        }
    }

    /// A probe every 10 ms from the container's namespace `namespace` to `peer`, run on the host
    /// (the image has no ping) through the container's mount namespace, where `ip netns` keeps it.
    func startPinger(from namespace: String, to peer: String, dir: String, label: String) async throws
        -> RecoveryPinger
    {
        let containerPID = try await Docker.check(["inspect", "--format", "{{.State.Pid}}", name])
            .stdout.trimmingWhitespace
        let process = try RecoverySpawned(
            [
                "/usr/bin/nsenter", "--net=/proc/\(containerPID)/root/run/netns/\(namespace)", RecoveryPinger.ping,
                "-D", "-n", "-i", "0.01", "-W", "1", peer,
            ], outputPath: dir + "/ping-\(label).log")
        return RecoveryPinger(process: process, label: label)
    }
}
