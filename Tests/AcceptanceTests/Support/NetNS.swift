import Glibc

/// A network namespace the test made (`ip netns add`), deleted when its scope ends.
struct NetNS: Sendable {
    static let ip = "/usr/sbin/ip"
    static let busybox = "/bin/busybox"

    let name: String
    /// The path dockerd would pass as SandboxKey.
    var path: String { "/var/run/netns/\(name)" }

    /// Runs `ip -n NAME args...` and requires success.
    @discardableResult
    func ip(_ args: String...) async throws -> CommandResult {
        try await Command.check([NetNS.ip, "-n", name] + args, timeout: .seconds(20))
    }

    /// The argv prefix that runs a command inside `namespace` (`ip netns exec NAME`; it also
    /// mounts the namespace's own /sys); empty for nil, the test's own namespace.
    static func exec(in namespace: NetNS?) -> [String] {
        namespace.map { [ip, "netns", "exec", $0.name] } ?? []
    }

    /// Runs argv inside the namespace (`ip netns exec`).
    func exec(_ argv: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
        try await Command.run(NetNS.exec(in: self) + argv, timeout: timeout)
    }

    /// busybox ping from inside the namespace; true when replies came back.
    func ping(_ address: String, count: Int = 3, wait: Int = 2) async throws -> CommandResult {
        try await exec(
            [NetNS.busybox, "ping", "-c", "\(count)", "-W", "\(wait)", address],
            timeout: .seconds(Double(count * wait + 15)))
    }

    func linkExists(_ name: String) async throws -> Bool {
        try await Command.run([NetNS.ip, "-n", self.name, "link", "show", "dev", name], timeout: .seconds(10)).succeeded
    }

    /// What dockerd does after Join: move the host's link `tap` into this namespace, set it
    /// down, rename it eth0, set the MAC, add the address, bring it up.
    func adoptAsEth0(tap: String, mac: String, address: String) async throws {
        guard HostInspector.linkExists(tap) else {
            throw AcceptanceFailure("Join named \(tap) but no such link exists in the host netns")
        }
        try await Command.check([NetNS.ip, "link", "set", "dev", tap, "netns", name])
        try await ip("link", "set", "dev", tap, "down")
        try await ip("link", "set", "dev", tap, "name", "eth0")
        try await ip("link", "set", "dev", "eth0", "address", mac)
        try await ip("addr", "add", address, "dev", "eth0")
        try await ip("link", "set", "dev", "eth0", "up")
    }

    /// What dockerd does after Leave: move eth0 back to the host netns under its own name `tap`.
    func returnEth0(as tap: String) async throws {
        try await ip("link", "set", "dev", "eth0", "down")
        try await ip("link", "set", "dev", "eth0", "name", tap)
        try await ip("link", "set", "dev", tap, "netns", "\(getpid())")
    }

    /// Makes `count` namespaces, runs `body`, deletes them (also on failure).
    static func with<T>(count: Int, _ body: ([NetNS]) async throws -> T) async throws -> T {
        var made: [NetNS] = []
        do {
            for _ in 0..<count {
                let ns = NetNS(name: "vdeacc-" + IDs.tag(8))
                try await Command.check([ip, "netns", "add", ns.name], timeout: .seconds(20))
                made.append(ns)
                try await ns.ip("link", "set", "lo", "up")
            }
            let value = try await body(made)
            try await delete(made)
            return value
        } catch {
            try? await delete(made)
            throw error
        }
    }

    private static func delete(_ namespaces: [NetNS]) async throws {
        var failures: [String] = []
        for ns in namespaces {
            let r = try await Command.run([ip, "netns", "del", ns.name], timeout: .seconds(20))
            if !r.succeeded { failures.append(r.description) }
        }
        if !failures.isEmpty { throw AcceptanceFailure("could not delete test namespaces: \(failures)") }
    }
}

extension NetNS {
    /// A plug made by hand in this namespace, as a VM attaches to a network's `socket_dir`
    /// (`vde_plug2tap -s SOCKET_DIR TAP`): waits for its tap, gives it `address` (a CIDR) and,
    /// when given, `mac`, brings it up, and runs `body` with the plug and the tap's name; the
    /// plug is stopped after. Throws what `body` threw.
    func withExternalPlug<T: Sendable>(
        socketDir: String, address: String, mac: String? = nil, logPath: String,
        _ body: (BackgroundProcess, String) async throws -> T
    ) async throws -> T {
        let tap = "vxtap" + IDs.tag(6)
        let argv = [NetNS.ip, "netns", "exec", name, "/usr/bin/vde_plug2tap", "-s", socketDir, tap]
        return try await Background.with(argv, logPath: logPath) { plug in
            try await Poll.until("vde_plug2tap to make \(tap) in \(name)") {
                guard plug.isRunning else { throw AcceptanceFailure("vde_plug2tap exited: \(plug.logTail())") }
                return try await linkExists(tap)
            }
            if let mac { try await ip("link", "set", "dev", tap, "address", mac) }
            try await ip("addr", "add", address, "dev", tap)
            try await ip("link", "set", "dev", tap, "up")
            return try await body(plug, tap)
        }.outcome.get()
    }
}
