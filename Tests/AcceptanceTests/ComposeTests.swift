import Foundation
import Testing

extension Acceptance {
    /// examples/compose/docker-compose.yml under Debian's docker-compose 1.29 and the real
    /// dockerd, with the supervisor under test on the real plugin socket (driver and IPAM `vde`).
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct ComposeTests {
        static let file = Repository.file("examples/compose/docker-compose.yml")

        /// `up` makes both networks with the file's driver options and IPAM; the clients reach
        /// each other, the router at the gateway, and the server on the other network through
        /// the router; `down` leaves no container, network, worker, switch, plug or tap.
        @Test func exampleComesUpRoutesAndGoesDownClean() async throws {
            try await Docker.checkEnvironment()
            try ComposeProject.checkEnvironment()
            try await SupervisorFixture.with(socket: SupervisorFixture.realSocket) { supervisor in
                await ComposeProject.removeLeftovers()
                try await ComposeProject.with(file: Self.file) { project in
                    let upStarted = ContinuousClock.now
                    let up = try await project.run(["up", "-d"])
                    try #require(up.succeeded, "docker-compose up: \(up)")
                    print("compose example: `up -d` took \(ContinuousClock.now - upStarted)")

                    let lan = try await expectNetwork(project, "lan", subnet: "10.77.40.0/24 10.77.40.1")
                    let wan = try await expectNetwork(project, "wan", subnet: "10.77.41.0/24 10.77.41.1")
                    let options = try await inspect(network: project.network("lan"), "{{json .Options}}")
                    #expect(
                        options.contains("\"link_delay\":\"2ms\"") && options.contains("\"num_switchports\":\"16\""),
                        "lan's driver_opts should reach the plugin: \(options)")

                    let nodes = try await Nodes(project)
                    #expect(nodes.routerLan.ipAddress == "10.77.40.1" && nodes.routerWan.ipAddress == "10.77.41.1")
                    #expect(nodes.client1.ipAddress == "10.77.40.11" && nodes.server.ipAddress == "10.77.41.10")
                    // The vde IPAM's lowest free address: .1 is the gateway, reserved for the router.
                    #expect(nodes.client2.ipAddress == "10.77.40.2", "client2's address from the vde IPAM")
                    for (name, node, gateway) in [
                        ("client1", nodes.client1, "10.77.40.1"), ("client2", nodes.client2, "10.77.40.1"),
                        ("server", nodes.server, "10.77.41.1"),
                    ] {
                        #expect(node.gateway == gateway, "\(name) should route through the router: \(node.gateway)")
                    }

                    try await expectPings(nodes)

                    // lan's endpoints are plugged by wirefilter (they have a link_delay), wan's by
                    // vde_plug2tap; the taps are in the containers (as eth0), not on the host.
                    let lanSwitch = try supervisor.switchDir(network: lan)
                    let wanSwitch = try supervisor.switchDir(network: wan)
                    let needles = [lan, wan, lanSwitch, wanSwitch] + nodes.taps
                    let running = HostInspector.vdeProcesses(mentioning: needles)
                    for program in ["vde-networker", "vde_switch"] {
                        #expect(
                            running.filter { $0.program == program }.count == 2,
                            "one \(program) per network: \(running)")
                    }
                    #expect(HostInspector.wirefilters(ctlDir: lanSwitch).count == 3, "lan's plugs: \(running)")
                    #expect(HostInspector.plug2taps(ctlDir: wanSwitch).count == 2, "wan's plugs: \(running)")

                    let downStarted = ContinuousClock.now
                    let down = try await project.run(["down"])
                    try #require(down.succeeded, "docker-compose down: \(down)")
                    print("compose example: `down` took \(ContinuousClock.now - downStarted)")
                    let left = try await project.labelled()
                    #expect(left.containers.isEmpty && left.networks.isEmpty, "left after down: \(left)")
                    for id in [lan, wan] {
                        let gone = try await Docker.run(["network", "inspect", id], timeout: .seconds(30))
                        #expect(!gone.succeeded, "docker still knows network \(id)")
                    }
                    try await Poll.until("both networks' workers, switches and plugs to exit", deadline: .seconds(15)) {
                        HostInspector.vdeProcesses(mentioning: needles).isEmpty
                    }
                    for tap in nodes.taps {
                        try await Poll.until("tap \(tap) to be deleted") { !HostInspector.linkExists(tap) }
                    }
                    for id in [lan, wan] {
                        let networkRunDir = try supervisor.paths(network: id).networkDir
                        try await Poll.until("no sockets left below \(networkRunDir)") {
                            TempDir.sockets(under: networkRunDir).isEmpty
                        }
                        #expect(!supervisor.stateText().contains(id), "state file still mentions \(id)")
                    }
                }
            }
        }

        /// The network's driver, IPAM driver, subnet and gateway are the file's; returns its ID.
        func expectNetwork(_ project: ComposeProject, _ key: String, subnet: String) async throws -> String {
            let name = project.network(key)
            let drivers = try await inspect(network: name, "{{.Driver}} {{.IPAM.Driver}}")
            #expect(drivers == "vde vde", "\(name): driver and IPAM driver")
            let config = try await inspect(network: name, "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}")
            #expect(config == subnet, "\(name): subnet and gateway")
            return try await inspect(network: name, "{{.Id}}")
        }

        func inspect(network: String, _ format: String) async throws -> String {
            try await Docker.check(["network", "inspect", "--format", format, network], timeout: .seconds(30)).stdout
                .trimmingWhitespace
        }

        /// Across lan (each end's link delayed 2 ms each way: at least 8 ms a round trip), to
        /// the router at the gateway, and through the router to wan (one hop: TTL 63).
        func expectPings(_ nodes: Nodes) async throws {
            let client2 = nodes.client2.ipAddress
            let across = try await ping(nodes, from: "client1", client2)
            #expect(across.succeeded, "client1 -> client2: \(across)")
            let rtt = minimumRoundTrip(across.stdout)
            #expect(rtt.map { $0 >= 8 } == true, "lan's link_delay=2ms should make a round trip >= 8 ms: \(across)")
            print("compose example: client1 -> client2 round trip at least \(rtt ?? -1) ms (link_delay=2ms)")
            let back = try await ping(nodes, from: "client2", "10.77.40.11")
            #expect(back.succeeded, "client2 -> client1: \(back)")
            for client in ["client1", "client2"] {
                let gateway = try await ping(nodes, from: client, "10.77.40.1")
                #expect(gateway.succeeded, "\(client) -> the router at the gateway: \(gateway)")
            }
            let routed = try await ping(nodes, from: "client1", "10.77.41.10")
            #expect(routed.succeeded && routed.stdout.contains("ttl=63"), "client1 -> server via the router: \(routed)")
            let reply = try await ping(nodes, from: "server", client2)
            #expect(reply.succeeded && reply.stdout.contains("ttl=63"), "server -> client2 via the router: \(reply)")
        }

        func ping(_ nodes: Nodes, from service: String, _ address: String) async throws -> CommandResult {
            try await Docker.run(
                ["exec", nodes.containers[service] ?? service, "ping", "-c", "3", "-W", "2", address],
                timeout: .seconds(30))
        }

        /// busybox ping's `round-trip min/avg/max = 8.4/8.6/8.9 ms`: the minimum, in ms.
        func minimumRoundTrip(_ output: String) -> Double? {
            guard let line = output.split(separator: "\n").first(where: { $0.contains("min/avg/max") }),
                let values = line.split(separator: "=").last?.split(separator: "/").first
            else { return nil }
            return Double(values.trimmingCharacters(in: .whitespaces))
        }

        /// The example's containers' attachments, as `docker inspect` shows them.
        struct Nodes {
            var routerLan, routerWan, client1, client2, server: Attachment

            /// Container IDs by service.
            var containers: [String: String] = [:]

            init(_ project: ComposeProject) async throws {
                for service in ["router", "client1", "client2", "server"] {
                    containers[service] = try await project.container(service)
                }
                let containers = containers
                func attachment(_ service: String, _ key: String) async throws -> Attachment {
                    try await Docker.attachment(container: containers[service] ?? "", network: project.network(key))
                }
                routerLan = try await attachment("router", "lan")
                routerWan = try await attachment("router", "wan")
                client1 = try await attachment("client1", "lan")
                client2 = try await attachment("client2", "lan")
                server = try await attachment("server", "wan")
            }

            var taps: [String] { [routerLan, routerWan, client1, client2, server].map(\.tap) }
        }
    }
}
