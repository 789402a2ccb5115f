import Foundation
import Glibc
import Shared
import Testing

/// Two hosts simulated on this machine (issue 16). Host A is the root network namespace: the
/// real dockerd with the plugin on its real socket. Host B is the network namespace `mh-b` with
/// a supervisor of its own (own plugin socket, run dir, state dir, control socket), driven over
/// the plugin API as dockerd would drive it. A veth pair is the wire between them and carries
/// the multicast: `vxmA` (root, 169.254.26.1/24) <-> `vxmB` (`mh-b`, 169.254.26.2/24). Every
/// uplink is pinned to its host's end with `/if=` and keeps vxvde's default ttl=1, so no test
/// frame leaves this machine (docs/multihost.md).
///
/// Names are fixed (`mh-*`, `vxm*`, groups 239.255.26.0/24) and owned by these tests alone, so
/// that what an interrupted run left is recognised and removed before the next.
enum MultiHostLab {
    static let hostB = NetNS(name: "mh-b")
    static let wireA = "vxmA"
    static let wireB = "vxmB"
    static let wireAddressA = "169.254.26.1/24"
    static let wireAddressB = "169.254.26.2/24"
    /// Prefix of every namespace these tests make.
    static let namespacePrefix = "mh-"

    /// The URL each host's side of a segment uses: the same group, each pinned to its own wire.
    static func uplinkA(group: String) -> String { "vxvde://\(group)/if=\(wireA)" }
    static func uplinkB(group: String) -> String { "vxvde://\(group)/if=\(wireB)" }

    /// Makes host B's namespace and the wire, runs `body`, removes both (also on failure; what
    /// runs in `mh-b` must have stopped by then, or the namespace outlives its name).
    static func withWire<T>(_ body: () async throws -> T) async throws -> T {
        await removeNamespacesAndWire()
        do {
            try await Command.check([NetNS.ip, "netns", "add", hostB.name], timeout: .seconds(20))
            try await hostB.ip("link", "set", "lo", "up")
            try await Command.check(
                [NetNS.ip, "link", "add", wireA, "type", "veth", "peer", "name", wireB, "netns", hostB.name],
                timeout: .seconds(20))
            try await Command.check([NetNS.ip, "link", "set", wireA, "multicast", "on", "up"], timeout: .seconds(20))
            try await Command.check([NetNS.ip, "addr", "add", wireAddressA, "dev", wireA], timeout: .seconds(20))
            try await hostB.ip("link", "set", wireB, "multicast", "on", "up")
            try await hostB.ip("addr", "add", wireAddressB, "dev", wireB)
            let value = try await body()
            await removeNamespacesAndWire()
            return value
        } catch {
            await removeNamespacesAndWire()
            throw error
        }
    }

    /// `count` namespaces `mh-XXXXXX` (loopback up) standing for containers of host B.
    static func withNamespaces<T>(count: Int, _ body: ([NetNS]) async throws -> T) async throws -> T {
        var made: [NetNS] = []
        do {
            for _ in 0..<count {
                let ns = NetNS(name: namespacePrefix + IDs.tag(6))
                try await Command.check([NetNS.ip, "netns", "add", ns.name], timeout: .seconds(20))
                made.append(ns)
                try await ns.ip("link", "set", "lo", "up")
            }
            let value = try await body(made)
            for ns in made { _ = try? await Command.run([NetNS.ip, "netns", "del", ns.name], timeout: .seconds(20)) }
            return value
        } catch {
            for ns in made { _ = try? await Command.run([NetNS.ip, "netns", "del", ns.name], timeout: .seconds(20)) }
            throw error
        }
    }

    /// Names the network namespace of a running container `mh-XXXXXX` (`ip netns attach`), so
    /// that host tools (iputils ping) run in it like in host B's namespaces. Deleting the name
    /// leaves the container's namespace alone.
    static func attach(container pid: Int32) async throws -> NetNS {
        let ns = NetNS(name: namespacePrefix + IDs.tag(6))
        try await Command.check([NetNS.ip, "netns", "attach", ns.name, "\(pid)"], timeout: .seconds(20))
        return ns
    }

    static func namespaces() async -> [String] {
        let list = (try? await Command.run([NetNS.ip, "netns", "list"], timeout: .seconds(20)))?.stdout ?? ""
        return list.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { $0.hasPrefix(namespacePrefix) }
    }

    /// Deletes every `mh-*` namespace (with `vxmB`, and so `vxmA`) and a `vxmA` left without its peer.
    static func removeNamespacesAndWire() async {
        for name in await namespaces() {
            _ = try? await Command.run([NetNS.ip, "netns", "del", name], timeout: .seconds(20))
        }
        if HostInspector.linkExists(wireA) {
            _ = try? await Command.run([NetNS.ip, "link", "del", wireA], timeout: .seconds(20))
        }
        // A veth goes with its namespace a moment after `netns del` returns.
        _ = try? await Poll.until("\(wireA) to go with \(hostB.name)", deadline: .seconds(10)) {
            !HostInspector.linkExists(wireA)
        }
    }

    /// Packets host A sent on the wire so far (the kernel's counter).
    static func wireASentPackets() -> Int {
        TempDir.readText("/sys/class/net/\(wireA)/statistics/tx_packets").flatMap { Int($0.trimmingWhitespace) } ?? 0
    }

    /// What these tests may have left on the machine: namespaces `mh-*`, links `vxm*`, any
    /// process of a 239.255.26.0/24 uplink or mentioning one of `paths` (run dirs), the taps of
    /// `endpoints`. Empty when clean.
    static func leftovers(paths: [String], endpoints: [String]) async -> [String] {
        var found = await namespaces().map { "netns \($0)" }
        found += HostInspector.links().filter { $0.hasPrefix("vxm") }.map { "link \($0)" }
        found += HostInspector.vdeProcesses(mentioning: ["vxvde://239.255.26."] + paths).map { "process \($0)" }
        found += endpoints.map(Requests.tap(of:)).filter(HostInspector.linkExists).map { "tap \($0)" }
        return found
    }
}

/// Host B's supervisor: a ``RecoverySupervisor`` run inside `mh-b` (its own plugin socket,
/// run dir, state dir, control socket), so its workers, switches, plugs, taps and uplinks live
/// there too; a test may kill it and start another on the same sockets and dirs.
typealias HostBSupervisor = RecoverySupervisor

extension MultiHostLab {
    /// Runs `body` with host B's supervisor. It must still run when `body` ends (a kill whose
    /// restart failed is a failure); then it must stop on SIGTERM with exit 0, and
    /// `stop-networks`, in `mh-b` as well, stops what its workers ran.
    static func withHostB<T: Sendable>(_ body: (HostBSupervisor) async throws -> T) async throws -> T {
        try await RecoverySupervisor.with(in: hostB) { b in
            let value = try await body(b)
            guard b.isRunning else {
                throw AcceptanceFailure("host B's supervisor was not running at the end:\n\(b.logTail(4000))")
            }
            return value
        }
    }
}

/// A container of host B: an endpoint of B's network, joined with a namespace of the test as
/// its sandbox, its tap moved there as eth0 the way dockerd does it.
struct HostBMember: Sendable {
    var endpoint: String
    var tap: String
    var mac: String
    /// CIDR, as the IPAM gave it.
    var address: String
    var namespace: NetNS
    var ip: String { String(address.split(separator: "/")[0]) }
}

/// Host B's network, made through its supervisor's plugin API in dockerd's order: the vde IPAM
/// pool (the shared subnet, B's own `--ip-range`), the gateway address, CreateNetwork with the
/// uplink; then per member RequestAddress, CreateEndpoint, Join.
struct HostBNetwork: Sendable {
    let host: HostBSupervisor
    let id: String
    let poolID: String
    let paths: NetworkPaths

    /// `subnet` is `10.226.N` (a /24); `range` B's part of it (`10.226.N.32/28`); the gateway is .1.
    static func create(on host: HostBSupervisor, subnet: String, range: String, options: [String: String])
        async throws -> HostBNetwork
    {
        let client = host.client
        let pool = try await client.ok(
            "/IpamDriver.RequestPool",
            DockerAPI.RequestPoolRequest(
                AddressSpace: "LocalDefault", Pool: "\(subnet).0/24", SubPool: range, Options: [:], V6: false),
            as: DockerAPI.RequestPoolResponse.self)
        _ = try await client.ok(
            "/IpamDriver.RequestAddress",
            DockerAPI.RequestAddressRequest(
                PoolID: pool.PoolID, Address: "\(subnet).1",
                Options: [DockerAPI.requestAddressTypeKey: DockerAPI.gatewayAddressType]),
            as: DockerAPI.RequestAddressResponse.self)
        let id = IDs.dockerID()
        try await client.ok(
            "/NetworkDriver.CreateNetwork",
            Requests.createNetwork(id, pool: "\(subnet).0/24", gateway: "\(subnet).1/24", options: options))
        return HostBNetwork(host: host, id: id, poolID: pool.PoolID, paths: try host.paths(network: id))
    }

    /// A member with the next address of B's range, in `namespace`.
    func join(_ namespace: NetNS) async throws -> HostBMember {
        let client = host.client
        let address = try await client.ok(
            "/IpamDriver.RequestAddress", DockerAPI.RequestAddressRequest(PoolID: poolID, Address: "", Options: [:]),
            as: DockerAPI.RequestAddressResponse.self
        ).Address
        let endpoint = IDs.dockerID()
        let created = try await client.ok(
            "/NetworkDriver.CreateEndpoint", Requests.createEndpoint(network: id, endpoint: endpoint, address: address),
            as: DockerAPI.CreateEndpointResponse.self)
        let mac = try #require(created.Interface?.MacAddress?.rawValue, "CreateEndpoint chose no MAC")
        let joined = try await client.ok(
            "/NetworkDriver.Join", Requests.join(network: id, endpoint: endpoint, sandbox: namespace.path),
            as: DockerAPI.JoinResponse.self)
        let tap = joined.InterfaceName.SrcName.rawValue
        try await namespace.adoptAsEth0(tap: tap, from: MultiHostLab.hostB, mac: mac, address: address)
        return HostBMember(endpoint: endpoint, tap: tap, mac: mac, address: address, namespace: namespace)
    }

    /// What dockerd does when a container goes: Leave, its eth0 back to the host under the
    /// tap's name, DeleteEndpoint, ReleaseAddress.
    func remove(_ member: HostBMember) async throws {
        let client = host.client
        try await client.ok("/NetworkDriver.Leave", Requests.endpoint(id, member.endpoint))
        try await member.namespace.ip("link", "set", "dev", "eth0", "down")
        try await member.namespace.ip("link", "set", "dev", "eth0", "name", member.tap)
        try await member.namespace.ip("link", "set", "dev", member.tap, "netns", MultiHostLab.hostB.name)
        try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(id, member.endpoint))
        try await client.ok(
            "/IpamDriver.ReleaseAddress", DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: member.ip))
    }

    /// DeleteNetwork, then the pool.
    func delete() async throws {
        try await host.client.ok("/NetworkDriver.DeleteNetwork", Requests.network(id))
        try await host.client.ok("/IpamDriver.ReleasePool", DockerAPI.ReleasePoolRequest(PoolID: poolID))
    }
}

extension NetNS {
    /// ``adoptAsEth0(tap:mac:address:)`` for a tap made in `host`'s namespace rather than this
    /// process's: what dockerd on host B does after Join.
    func adoptAsEth0(tap: String, from host: NetNS, mac: String, address: String) async throws {
        guard try await host.linkExists(tap) else {
            throw AcceptanceFailure("Join named \(tap) but \(host.name) has no such link")
        }
        try await host.ip("link", "set", "dev", tap, "netns", name)
        try await ip("link", "set", "dev", tap, "down")
        try await ip("link", "set", "dev", tap, "name", "eth0")
        try await ip("link", "set", "dev", "eth0", "address", mac)
        try await ip("addr", "add", address, "dev", "eth0")
        try await ip("link", "set", "dev", "eth0", "up")
    }

    /// The MTU of `device` in this namespace.
    func mtu(_ device: String = "eth0") async throws -> Int? {
        let line = try await ip("-o", "link", "show", "dev", device).stdout
        let fields = line.split(separator: " ")
        guard let i = fields.firstIndex(of: "mtu"), i + 1 < fields.count else { return nil }
        return Int(fields[i + 1])
    }
}

/// Runs of consecutive lost probes in an iputils ping across faults (-i 0.1: a run of 10 is
/// one second without a path).
extension RecoveryPinger.Summary {
    /// Lost icmp_seq runs before the last answered probe, each as (first, length); those after
    /// it were still in flight when ping stopped.
    var lossRuns: [(first: Int, length: Int)] {
        let replied = Set(1...max(transmitted, 1)).subtracting(missing)
        guard let last = replied.filter({ $0 <= transmitted }).max() else { return [] }
        var runs: [(first: Int, length: Int)] = []
        for seq in missing.sorted() where seq < last {
            if let previous = runs.last, previous.first + previous.length == seq {
                runs[runs.count - 1].length += 1
            } else {
                runs.append((seq, 1))
            }
        }
        return runs
    }

    var longestLossRun: Int { lossRuns.map(\.length).max() ?? 0 }
}
