import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// `socket_dir`, `create_sockets` and `management_socket` over the plugin API with the real
    /// supervisor: concurrent creates of one path, and a create_sockets network that loses its
    /// worker (issue 10).
    @Suite(.timeLimit(.minutes(5)))
    struct SwitchOwnershipTests {
        /// Two CreateNetwork calls at once for one path: one wins, the other is refused clearly,
        /// and the winner's switch is left alone.
        @Test func concurrentCreatesOfOnePathOneWins() async throws {
            try await SupervisorFixture.with { supervisor in
                try await TempDir.with("own") { dir in
                    let client = supervisor.client
                    for (round, options) in [
                        ["socket_dir": dir + "/sw", "create_sockets": "true"],
                        ["socket_dir": dir + "/sw", "create_sockets": "true", "management_socket": dir + "/m/sw.mgmt"],
                    ].enumerated() {
                        let first = IDs.dockerID()
                        let second = IDs.dockerID()
                        var secondOptions = options
                        // Round 1: another socket_dir, the same management socket.
                        if round == 1 { secondOptions["socket_dir"] = dir + "/other" }
                        let replies = try await withThrowingTaskGroup(of: (String, HTTPReply).self) { group in
                            for (id, opts) in [(first, options), (second, secondOptions)] {
                                group.addTask {
                                    (
                                        id,
                                        try await client.post(
                                            "/NetworkDriver.CreateNetwork",
                                            Requests.createNetwork(
                                                id, pool: "10.203.\(round).0/24", gateway: "10.203.\(round).1/24",
                                                options: opts))
                                    )
                                }
                            }
                            return try await group.reduce(into: [String: HTTPReply]()) { $0[$1.0] = $1.1 }
                        }
                        let winners = replies.filter { $0.value.isSuccess }.map(\.key)
                        try #require(winners.count == 1, "exactly one create must win (round \(round)): \(replies)")
                        let winner = winners[0]
                        let loser = winner == first ? second : first
                        let (status, message) = try client.refusal("CreateNetwork", try #require(replies[loser]))
                        #expect((400..<500).contains(status))
                        #expect(
                            message.contains("network \(NetworkID(stringLiteral: winner).short)"),
                            "the refusal should name the winner: \(message)")
                        #expect(!supervisor.stateText().contains(loser))
                        // The winner's switch still answers: nothing of it was unlinked.
                        let winnerDir = try #require((winner == first ? options : secondOptions)["socket_dir"])
                        #expect(UnixListener.accepts(winnerDir + "/ctl"), "the winner's switch must still answer")
                        try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(winner))
                        #expect(
                            !TempDir.exists(dir + "/sw") && !TempDir.exists(dir + "/other")
                                && !TempDir.exists(dir + "/m"),
                            "nothing of either network may stay: \((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])"
                        )
                    }
                }
            }
        }

        /// `-o management_socket=` of someone else's live socket, or `-o socket_dir=` of a
        /// directory of other sockets: refused with a clear error, and nothing is unlinked.
        @Test func foreignSocketsAreRefusedAndKept() async throws {
            try await SupervisorFixture.with { supervisor in
                try await TempDir.with("own") { dir in
                    let client = supervisor.client
                    let runLike = dir + "/run"
                    mkdir(runLike, 0o755)
                    let docker = runLike + "/docker.sock"
                    let listener = try UnixListener(path: docker)
                    defer { listener.close() }
                    for options in [["management_socket": docker], ["socket_dir": runLike, "create_sockets": "true"]] {
                        let id = IDs.dockerID()
                        let (_, message) = try await client.refused(
                            "/NetworkDriver.CreateNetwork",
                            Requests.createNetwork(
                                id, pool: "10.204.0.0/24", gateway: "10.204.0.1/24", options: options))
                        #expect(message.contains(runLike), "the error should name the path: \(message)")
                        #expect(UnixListener.accepts(docker), "the live socket must stay (options \(options))")
                        #expect(!supervisor.stateText().contains(id))
                    }
                    #expect(
                        try FileManager.default.contentsOfDirectory(atPath: runLike) == ["docker.sock"],
                        "nothing may be added or removed")
                }
            }
        }

        /// The scenario of issue 10: `socket_dir` + `create_sockets=true`, two endpoints, kill -9
        /// of the worker. Traffic comes back; the network's files stay in its run dir; nothing but
        /// the marker lands in the user's socket_dir; `network rm` leaves no tap and no run dir.
        @Test func createSocketsNetworkComesBackAfterItsWorkerIsKilled() async throws {
            try await SupervisorFixture.with { supervisor in
                try await RecoveryNamespaces.with(count: 2) { namespaces in
                    try await TempDir.with("lab") { lab in
                        let client = supervisor.client
                        let socketDir = lab + "/sw"
                        let network = IDs.dockerID()
                        try await client.ok(
                            "/NetworkDriver.CreateNetwork",
                            Requests.createNetwork(
                                network, pool: "10.205.0.0/24", gateway: "10.205.0.1/24",
                                options: ["socket_dir": socketDir, "create_sockets": "true"]))
                        var endpoints: [(id: String, tap: String, address: String, ns: NetNS)] = []
                        for (i, ns) in namespaces.enumerated() {
                            let endpoint = IDs.dockerID()
                            let address = "10.205.0.\(10 + i)/24"
                            let created = try await client.ok(
                                "/NetworkDriver.CreateEndpoint",
                                Requests.createEndpoint(network: network, endpoint: endpoint, address: address),
                                as: DockerAPI.CreateEndpointResponse.self)
                            let joined = try await client.ok(
                                "/NetworkDriver.Join",
                                Requests.join(network: network, endpoint: endpoint, sandbox: ns.path),
                                as: DockerAPI.JoinResponse.self)
                            try await ns.adoptAsEth0(
                                tap: joined.InterfaceName.SrcName.rawValue,
                                mac: try #require(created.Interface?.MacAddress?.rawValue), address: address)
                            endpoints.append(
                                (
                                    endpoint, joined.InterfaceName.SrcName.rawValue,
                                    String(address.split(separator: "/")[0]), ns
                                ))
                        }
                        func pings() async throws -> Bool {
                            try await endpoints[0].ns.ping(endpoints[1].address, count: 1, wait: 1).succeeded
                        }
                        try await Poll.until("traffic on the create_sockets network") { try await pings() }

                        let workers = RecoveryProcess.all().values.filter {
                            $0.program == "vde-networker" && !$0.isZombie && $0.argv.contains(network)
                        }
                        let worker = try #require(workers.first, "no worker of the network runs")
                        kill(worker.pid, SIGKILL)
                        try await Poll.until(
                            "traffic again after kill -9 of the worker", deadline: .seconds(10),
                            every: .milliseconds(50)
                        ) {
                            let replaced = RecoveryProcess.all().values.contains {
                                $0.program == "vde-networker" && !$0.isZombie && $0.argv.contains(network)
                                    && $0.pid != worker.pid
                            }
                            guard replaced else { return false }
                            return try await pings()
                        }

                        // Every file of ours is under the network's own run dir, whatever the switch's place.
                        let paths = try supervisor.paths(
                            network: network, options: NetworkOptions(socketDir: socketDir, createSockets: true))
                        let networkDir = paths.networkDir
                        try await Poll.until("the plug pid files under \(paths.plugsDir)") {
                            ((try? FileManager.default.contentsOfDirectory(atPath: paths.plugsDir)) ?? []).count == 2
                        }
                        #expect(TempDir.exists(paths.switchPIDFile))
                        #expect(
                            try FileManager.default.contentsOfDirectory(atPath: lab) == ["sw"],
                            "nothing of ours beside the user's socket_dir")
                        let inSocketDir = try FileManager.default.contentsOfDirectory(atPath: socketDir)
                        #expect(
                            inSocketDir.allSatisfy {
                                $0 == ".vde-supervisor" || $0 == "ctl" || $0.first?.isNumber == true
                            },
                            "only the switch's sockets and the marker in the socket_dir: \(inSocketDir)")
                        #expect(TempDir.readText(socketDir + "/.vde-supervisor")?.contains(network) == true)
                        // The state keeps the intent and records the fact apart.
                        let stateJSON =
                            try JSONSerialization.jsonObject(with: Data(supervisor.stateText().utf8)) as? [String: Any]
                        let record = ((stateJSON?["networks"] as? [String: Any])?[network] as? [String: Any]) ?? [:]
                        #expect(
                            (record["switchSpec"] as? [String: Any])?["mode"] as? String == "useOrCreate",
                            "state: \(record)")
                        #expect(
                            (record["switchSpec"] as? [String: Any])?["networkDir"] as? String == networkDir,
                            "state: \(record)")
                        #expect(record["switchStarted"] as? Bool == true, "state: \(record)")

                        for endpoint in endpoints {
                            try await client.ok("/NetworkDriver.Leave", Requests.endpoint(network, endpoint.id))
                            try await endpoint.ns.returnEth0(as: endpoint.tap)
                            try await client.ok(
                                "/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint.id))
                        }
                        try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
                        for endpoint in endpoints {
                            #expect(
                                !HostInspector.linkExists(endpoint.tap), "tap \(endpoint.tap) stayed after network rm")
                        }
                        #expect(!TempDir.exists(networkDir), "the network's run dir stayed after network rm")
                        #expect(!TempDir.exists(socketDir), "the socket_dir the plugin created stayed after network rm")
                    }
                }
            }
        }
    }
}

/// A unix stream socket the test listens on (someone else's live socket).
struct UnixListener {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = UnixListener.address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard fd >= 0, bound == 0, listen(fd, 16) == 0 else {
            throw AcceptanceFailure("cannot listen on \(path): errno \(errno)")
        }
    }

    func close() { _ = Glibc.close(fd) }

    static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        return address
    }

    static func accepts(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { Glibc.close(fd) }
        var address = address(path)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        } == 0
    }
}
