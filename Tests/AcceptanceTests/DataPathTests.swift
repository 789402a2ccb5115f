import Foundation
import Shared
import Testing

extension Acceptance {
    /// The data path without Docker: the test plays dockerd's part (moves each tap into a
    /// namespace it made, renames it, adds the address) and pings across the switch.
    @Suite(.timeLimit(.minutes(5)))
    struct DataPathTests {
        /// One endpoint as dockerd would handle it.
        struct Plugged {
            var endpoint: String
            var tap: String
            var mac: String
            var address: String
            var namespace: NetNS
        }

        @Test func twoNamespacesPingAcrossTheSwitchAndNothingIsLeft() async throws {
            try await SupervisorFixture.with { supervisor in
                try await NetNS.with(count: 2) { namespaces in
                    let client = supervisor.client
                    let network = IDs.dockerID()
                    try await client.ok(
                        "/NetworkDriver.CreateNetwork",
                        Requests.createNetwork(network, pool: "10.202.0.0/24", gateway: "10.202.0.1/24"))

                    var plugged: [Plugged] = []
                    for (i, ns) in namespaces.enumerated() {
                        let endpoint = IDs.dockerID()
                        let address = "10.202.0.\(10 + i)/24"
                        let created = try await client.ok(
                            "/NetworkDriver.CreateEndpoint",
                            Requests.createEndpoint(network: network, endpoint: endpoint, address: address),
                            as: DockerAPI.CreateEndpointResponse.self)
                        let mac = try #require(created.Interface?.MacAddress?.rawValue)
                        let joined = try await client.ok(
                            "/NetworkDriver.Join",
                            Requests.join(network: network, endpoint: endpoint, sandbox: ns.path),
                            as: DockerAPI.JoinResponse.self)
                        #expect(joined.Gateway == "10.202.0.1")
                        let tap = joined.InterfaceName.SrcName.rawValue
                        #expect(tap == Requests.tap(of: endpoint))
                        try await ns.adoptAsEth0(tap: tap, mac: mac, address: address)
                        plugged.append(Plugged(endpoint: endpoint, tap: tap, mac: mac, address: address, namespace: ns))
                    }

                    // The network's processes exist while it is in use (so that the checks
                    // below that they are gone mean something).
                    let needles = try ["--network-id \(network)", network, supervisor.switchDir(network: network)]
                    let running = HostInspector.vdeProcesses(mentioning: needles + plugged.map(\.tap))
                    #expect(
                        running.contains { $0.program == "vde-networker" },
                        "no vde-networker for the network: \(running)")
                    #expect(
                        running.contains { $0.program == "vde_switch" }, "no vde_switch for the network: \(running)")
                    #expect(
                        !TempDir.sockets(under: supervisor.runDir).isEmpty,
                        "the network's switch sockets should be in the run dir")

                    let first = plugged[0]
                    let second = plugged[1]
                    let target = String(second.address.split(separator: "/")[0])
                    let back = String(first.address.split(separator: "/")[0])
                    let there = try await first.namespace.ping(target)
                    #expect(there.succeeded, "ping \(first.address) -> \(target) across the switch failed: \(there)")
                    let reply = try await second.namespace.ping(back)
                    #expect(reply.succeeded, "ping \(second.address) -> \(back) failed: \(reply)")
                    // The peer answered with the MAC the plugin gave it.
                    let neighbours = try await first.namespace.ip("neigh", "show", target)
                    #expect(
                        neighbours.stdout.lowercased().contains(second.mac.lowercased()),
                        "neighbour entry \(neighbours.stdout) should carry \(second.mac)")

                    for p in plugged {
                        try await client.ok("/NetworkDriver.Leave", Requests.endpoint(network, p.endpoint))
                        try await p.namespace.returnEth0(as: p.tap)
                        #expect(HostInspector.linkExists(p.tap), "\(p.tap) should be back in the host netns")
                        try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, p.endpoint))
                    }
                    try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))

                    try await Poll.until("the network's worker, switch and plugs to exit", deadline: .seconds(15)) {
                        HostInspector.vdeProcesses(mentioning: needles + plugged.map(\.tap)).isEmpty
                    }
                    for p in plugged {
                        try await Poll.until("tap \(p.tap) to be deleted") { !HostInspector.linkExists(p.tap) }
                        #expect(
                            !(try await p.namespace.linkExists("eth0")), "eth0 of \(p.namespace.name) should be gone")
                    }
                    try await Poll.until("no sockets left in the run dir \(supervisor.runDir)") {
                        TempDir.sockets(under: supervisor.runDir).isEmpty
                    }
                    #expect(!supervisor.stateText().contains(network))
                }
            }
        }

        /// Endpoints of two networks with the same subnet and the same addresses do not
        /// hear each other; each network works on its own.
        @Test func networksAreIsolated() async throws {
            try await SupervisorFixture.with { supervisor in
                try await NetNS.with(count: 4) { namespaces in
                    let client = supervisor.client
                    let networkA = IDs.dockerID()
                    let networkB = IDs.dockerID()
                    for id in [networkA, networkB] {
                        try await client.ok(
                            "/NetworkDriver.CreateNetwork",
                            Requests.createNetwork(id, pool: "10.203.0.0/24", gateway: "10.203.0.1/24"))
                    }
                    // A1 = .10, A2 = .11 on A; B1 = .10 (the same address), B2 = .12 on B.
                    let layout = [
                        (networkA, "10.203.0.10/24"), (networkA, "10.203.0.11/24"),
                        (networkB, "10.203.0.10/24"), (networkB, "10.203.0.12/24"),
                    ]
                    var endpoints: [(network: String, endpoint: String, tap: String, mac: String)] = []
                    for (i, (network, address)) in layout.enumerated() {
                        let endpoint = IDs.dockerID()
                        let created = try await client.ok(
                            "/NetworkDriver.CreateEndpoint",
                            Requests.createEndpoint(network: network, endpoint: endpoint, address: address),
                            as: DockerAPI.CreateEndpointResponse.self)
                        let mac = try #require(created.Interface?.MacAddress?.rawValue)
                        let joined = try await client.ok(
                            "/NetworkDriver.Join",
                            Requests.join(network: network, endpoint: endpoint, sandbox: namespaces[i].path),
                            as: DockerAPI.JoinResponse.self)
                        try await namespaces[i].adoptAsEth0(
                            tap: joined.InterfaceName.SrcName.rawValue, mac: mac, address: address)
                        endpoints.append((network, endpoint, joined.InterfaceName.SrcName.rawValue, mac))
                    }
                    let a1 = namespaces[0]
                    let b1 = namespaces[2]
                    let peerA = try await a1.ping("10.203.0.11")
                    #expect(peerA.succeeded, "A1 must reach A2: \(peerA)")
                    let peerB = try await b1.ping("10.203.0.12")
                    #expect(peerB.succeeded, "B1 must reach B2: \(peerB)")
                    let across = try await a1.ping("10.203.0.12", count: 2, wait: 1)
                    #expect(!across.succeeded, "A1 reached B2 on the other network: \(across)")
                    // A2 answered for .11, and A1 never learnt B1's MAC for its own address's twin.
                    let neighbours = try await a1.ip("neigh", "show").stdout.lowercased()
                    #expect(
                        neighbours.contains(endpoints[1].mac.lowercased()),
                        "A1's neighbours \(neighbours) should hold A2's MAC")
                    #expect(!neighbours.contains(endpoints[3].mac.lowercased()), "A1 learnt B2's MAC: \(neighbours)")

                    for (i, e) in endpoints.enumerated() {
                        try await client.ok("/NetworkDriver.Leave", Requests.endpoint(e.network, e.endpoint))
                        try await namespaces[i].returnEth0(as: e.tap)
                        #expect(HostInspector.linkExists(e.tap), "\(e.tap) should be back in the host netns")
                        try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(e.network, e.endpoint))
                    }
                    for id in [networkA, networkB] {
                        try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(id))
                    }
                }
            }
        }
    }
}
