import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// The plugin under the real dockerd and docker CLI. The supervisor under test serves the
    /// real plugin socket, where dockerd discovers it; each test starts its own supervisor on
    /// that same path (dockerd caches the activation for its lifetime) with fresh state.
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct DockerTests {
        func withDocker<T: Sendable>(_ body: (Supervisor, DockerScope) async throws -> T) async throws -> T {
            try await Docker.checkEnvironment()
            return try await SupervisorFixture.with(socket: SupervisorFixture.realSocket) { supervisor in
                await Docker.removeLabelledLeftovers()
                return try await DockerScope.with { scope in try await body(supervisor, scope) }
            }
        }

        func networkInspect(_ name: String, _ format: String) async throws -> String {
            try await Docker.check(["network", "inspect", "--format", format, name], timeout: .seconds(30)).stdout
                .trimmingWhitespace
        }

        @Test func createAndRemoveNetworks() async throws {
            try await withDocker { supervisor, scope in
                let plain = try await scope.network("plain", ["--subnet", "10.77.1.0/24"])
                #expect(try await networkInspect(scope.name("plain"), "{{.Driver}} {{.IPAM.Driver}}") == "vde default")
                #expect(supervisor.stateText().contains(plain), "state file should record network \(plain)")

                let ipam = try await scope.network("ipam", ["--ipam-driver", "vde", "--subnet", "10.77.2.0/24"])
                #expect(try await networkInspect(scope.name("ipam"), "{{.Driver}} {{.IPAM.Driver}}") == "vde vde")
                #expect(supervisor.stateText().contains(ipam))

                try await scope.removeNetwork("plain")
                try await scope.removeNetwork("ipam")
                for id in [plain, ipam] {
                    #expect(!supervisor.stateText().contains(id), "state file still mentions removed network \(id)")
                    let left = try await Docker.run(["network", "inspect", id], timeout: .seconds(30))
                    #expect(!left.succeeded, "docker still knows network \(id)")
                }
            }
        }

        @Test func twoContainersPingEachOther() async throws {
            try await withDocker { _, scope in
                try await scope.network("net", ["--subnet", "10.77.3.0/24"])
                let a = try await scope.container("a", network: "net", ip: "10.77.3.10")
                let b = try await scope.container("b", network: "net", ip: "10.77.3.11")
                #expect(a.ipAddress == "10.77.3.10" && b.ipAddress == "10.77.3.11")
                try expectLocallyAdministeredUnicast(a.macAddress)
                #expect(a.macAddress != b.macAddress)
                let there = try await scope.ping(from: "a", "10.77.3.11")
                #expect(there.succeeded, "a -> b: \(there)")
                let back = try await scope.ping(from: "b", "10.77.3.10")
                #expect(back.succeeded, "b -> a: \(back)")
                let route = try await scope.exec("a", ["ip", "route"])
                #expect(route.stdout.contains("10.77.3.0/24"), "a's routes: \(route.stdout)")
            }
        }

        /// Docker's own MTU option: the containers' interfaces get it, full-size frames of that
        /// MTU cross with DF set (1400 and 1500), `docker network inspect` shows it; above what
        /// vde_switch carries (1501 and up) it is refused at create with the reason, and IPv6
        /// networks need at least 1280.
        @Test func mtuOptionSetsTheContainersInterfaces() async throws {
            try await withDocker { _, scope in
                try await scope.network(
                    "mtu", ["--subnet", "10.77.11.0/24", "-o", "com.docker.network.driver.mtu=1400"])
                _ = try await scope.container("a", network: "mtu", ip: "10.77.11.10")
                _ = try await scope.container("b", network: "mtu", ip: "10.77.11.11")
                let mtu = try await scope.exec("a", ["cat", "/sys/class/net/eth0/mtu"])
                #expect(mtu.stdout.trimmingWhitespace == "1400", "a's eth0: \(mtu)")
                // 1372 bytes of ICMP payload + 28 of headers = 1400: a full frame, not fragmented.
                let full = try await scope.exec("b", ["ping", "-c", "2", "-W", "2", "-s", "1372", "10.77.11.10"])
                #expect(full.succeeded, "a 1400-byte packet should cross: \(full)")
                // With DF (iputils in b's namespace: busybox ping cannot set it): 1400 bytes
                // cross unfragmented, 1401 are refused by b's own stack (its MTU is really 1400).
                let b = try await scope.net("b")
                let df = try await b.run(
                    [ContainerNet.ping, "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1372", "10.77.11.10"])
                #expect(df.succeeded, "a 1400-byte packet with DF should cross: \(df)")
                let over = try await b.run(
                    [ContainerNet.ping, "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1373", "10.77.11.10"])
                #expect(
                    !over.succeeded && over.output.contains("mtu=1400"),
                    "a 1401-byte packet with DF should be refused at MTU 1400: \(over)")
                let inspect = try await Docker.check(
                    ["network", "inspect", "--format", "{{json .Options}}", scope.name("mtu")], timeout: .seconds(30))
                #expect(inspect.stdout.contains("\"com.docker.network.driver.mtu\":\"1400\""), "\(inspect.stdout)")
                // 1500, the largest accepted: full 1500-byte packets with DF cross.
                try await scope.network(
                    "mtu5", ["--subnet", "10.77.15.0/24", "-o", "com.docker.network.driver.mtu=1500"])
                _ = try await scope.container("c", network: "mtu5", ip: "10.77.15.10")
                _ = try await scope.container("d", network: "mtu5", ip: "10.77.15.11")
                let d = try await scope.net("d")
                let mtu1500 = try await d.run([NetNS.ip, "-o", "link", "show", "dev", "eth0"])
                #expect(mtu1500.stdout.contains("mtu 1500"), "d's eth0: \(mtu1500)")
                let full1500 = try await d.run(
                    [ContainerNet.ping, "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", "10.77.15.10"])
                #expect(full1500.succeeded, "a 1500-byte packet with DF should cross at MTU 1500: \(full1500)")
                let above = try await scope.createNetwork(
                    "mtu6", ["--subnet", "10.77.16.0/24", "-o", "com.docker.network.driver.mtu=1501"])
                #expect(!above.succeeded, "mtu 1501 was accepted: \(above)")
                #expect(above.stderr.contains("1518 bytes"), "the error should say why: \(above.stderr)")
                let jumbo = try await scope.createNetwork(
                    "mtu2", ["--subnet", "10.77.12.0/24", "-o", "com.docker.network.driver.mtu=9000"])
                #expect(!jumbo.succeeded, "mtu 9000 was accepted: \(jumbo)")
                #expect(jumbo.stderr.contains("1518 bytes"), "the error should say why: \(jumbo.stderr)")
                let small6 = try await scope.createNetwork(
                    "mtu3",
                    [
                        "--subnet", "10.77.13.0/24", "--ipv6", "--subnet", "fd00:77:13::/64", "-o",
                        "com.docker.network.driver.mtu=1200",
                    ])
                #expect(!small6.succeeded, "an IPv6 network with mtu 1200 was accepted: \(small6)")
                #expect(small6.stderr.contains("1280"), "the error should name IPv6's minimum: \(small6.stderr)")
            }
        }

        @Test func gatewayAddressRules() async throws {
            try await withDocker { _, scope in
                try await scope.network(
                    "gw", ["--ipam-driver", "vde", "--subnet", "10.77.4.0/24", "--gateway", "10.77.4.1"])
                // Containers without --ip never get the gateway address.
                let p1 = try await scope.container("p1", network: "gw")
                let p2 = try await scope.container("p2", network: "gw")
                for p in [p1, p2] {
                    #expect(
                        p.ipAddress != "10.77.4.1" && p.ipAddress.hasPrefix("10.77.4."),
                        "automatic address \(p.ipAddress)")
                }
                #expect(
                    p1.gateway == "10.77.4.1", "Join should give the gateway to an ordinary endpoint: \(p1.gateway)")
                // One container may take it explicitly, and is reachable there.
                let g = try await scope.container("g", network: "gw", ip: "10.77.4.1")
                #expect(g.ipAddress == "10.77.4.1")
                #expect(
                    g.gateway != "10.77.4.1", "the endpoint holding the gateway address must not get itself as gateway")
                let ping = try await scope.ping(from: "p1", "10.77.4.1")
                #expect(ping.succeeded, "p1 -> the container at the gateway address: \(ping)")
                // A second one cannot.
                let second = try await scope.startContainer("g2", network: "gw", ip: "10.77.4.1")
                #expect(!second.succeeded, "a second container got the gateway address 10.77.4.1: \(second)")
                let p3 = try await scope.container("p3", network: "gw")
                #expect(p3.ipAddress != "10.77.4.1")
            }
        }

        @Test func numSwitchportsLimitsContainers() async throws {
            try await withDocker { _, scope in
                try await scope.network("ports", ["--subnet", "10.77.5.0/24", "-o", "num_switchports=2"])
                try await scope.container("c1", network: "ports", ip: "10.77.5.10")
                try await scope.container("c2", network: "ports", ip: "10.77.5.11")
                let tapsBefore = HostInspector.pluginTaps()
                let third = try await scope.startContainer("c3", network: "ports", ip: "10.77.5.12")
                #expect(!third.succeeded, "a third container started on a 2-port switch: \(third)")
                #expect(
                    third.output.lowercased().contains("port"),
                    "the error should mention the switch ports: \(third.output)")
                try await Poll.until("the failed container's tap to be removed") {
                    HostInspector.pluginTaps().subtracting(tapsBefore).isEmpty
                }
                let ping = try await scope.ping(from: "c1", "10.77.5.11")
                #expect(ping.succeeded, "the refused third container must not break the network: \(ping)")
            }
        }

        @Test func sameSubnetNetworksAreIsolated() async throws {
            try await withDocker { _, scope in
                try await scope.network("na", ["--ipam-driver", "vde", "--subnet", "10.77.6.0/24"])
                try await scope.network("nb", ["--ipam-driver", "vde", "--subnet", "10.77.6.0/24"])
                try await scope.container("a1", network: "na", ip: "10.77.6.10")
                let a2 = try await scope.container("a2", network: "na", ip: "10.77.6.11")
                try await scope.container("b1", network: "nb", ip: "10.77.6.10")
                let b2 = try await scope.container("b2", network: "nb", ip: "10.77.6.12")
                let peerA = try await scope.ping(from: "a1", "10.77.6.11")
                #expect(peerA.succeeded, "a1 -> a2 on the same network: \(peerA)")
                let peerB = try await scope.ping(from: "b1", "10.77.6.12")
                #expect(peerB.succeeded, "b1 -> b2 on the same network: \(peerB)")
                let across = try await scope.ping(from: "a1", "10.77.6.12", count: 2, wait: 1)
                #expect(!across.succeeded, "a1 on network A reached b2 on network B: \(across)")
                let neighbours = try await scope.exec("a1", ["ip", "neigh", "show"]).stdout.lowercased()
                #expect(neighbours.contains(a2.macAddress.lowercased()), "a1 should know a2's MAC: \(neighbours)")
                #expect(!neighbours.contains(b2.macAddress.lowercased()), "a1 learnt b2's MAC: \(neighbours)")
            }
        }

        @Test func createdSocketDirAcceptsExternalPlugs() async throws {
            try await withDocker { _, scope in
                try await TempDir.with("sd") { dir in
                    let socketDir = dir + "/sw"
                    try await scope.network(
                        "sd",
                        ["--subnet", "10.77.7.0/24", "-o", "socket_dir=\(socketDir)", "-o", "create_sockets=true"])
                    try await scope.container("c", network: "sd", ip: "10.77.7.10")
                    #expect(TempDir.exists(socketDir + "/ctl"), "the switch's ctl socket should be at \(socketDir)/ctl")
                    try await NetNS.with(count: 1) { namespaces in
                        let ns = namespaces[0]
                        try await ns.withExternalPlug(
                            socketDir: socketDir, address: "10.77.7.50/24", logPath: dir + "/plug.log"
                        ) { _, _ in
                            let out = try await ns.ping("10.77.7.10")
                            #expect(out.succeeded, "external plug -> container: \(out)")
                            let back = try await scope.ping(from: "c", "10.77.7.50")
                            #expect(back.succeeded, "container -> external plug: \(back)")
                        }
                    }
                    try await scope.removeContainer("c")
                    try await scope.removeNetwork("sd")
                    try await Poll.until("the switch the plugin created at \(socketDir) to stop") {
                        HostInspector.vdeProcesses(mentioning: [socketDir]).isEmpty
                    }
                }
            }
        }

        @Test func existingSwitchIsUsedAndLeftRunning() async throws {
            try await withDocker { _, scope in
                try await TempDir.with("ex") { dir in
                    let switchDir = dir + "/sw"
                    let management = dir + "/mgmt"
                    let run = try await Background.with(
                        ["/usr/bin/vde_switch", "-s", switchDir, "-M", management],
                        logPath: dir + "/switch.log", stop: .closeStdin
                    ) { vdeSwitch in
                        try await Poll.until("the test's vde_switch to listen at \(switchDir)/ctl") {
                            guard vdeSwitch.isRunning else {
                                throw AcceptanceFailure("vde_switch exited: \(vdeSwitch.logTail())")
                            }
                            return TempDir.exists(switchDir + "/ctl")
                        }
                        try await scope.network("ex", ["--subnet", "10.77.8.0/24", "-o", "socket_dir=\(switchDir)"])
                        try await scope.container("a", network: "ex", ip: "10.77.8.10")
                        try await scope.container("b", network: "ex", ip: "10.77.8.11")
                        let ping = try await scope.ping(from: "a", "10.77.8.11")
                        #expect(ping.succeeded, "containers on an existing switch: \(ping)")
                        let ports = try await managementCommand(management, "port/allprint")
                        #expect(
                            ports.contains("vde_plug2tap") || ports.contains("pid="),
                            "the switch should list the plugin's plugs: \(ports.prefix(2000))")

                        try await scope.removeContainer("a")
                        try await scope.removeContainer("b")
                        try await scope.removeNetwork("ex")
                        try await Poll.until("the plugin's plugs on the existing switch to stop") {
                            HostInspector.vdeProcesses(mentioning: [switchDir]).allSatisfy { $0.pid == vdeSwitch.pid }
                        }
                        #expect(vdeSwitch.isRunning, "docker network rm stopped a switch the plugin did not start")
                        #expect(
                            TempDir.exists(switchDir + "/ctl"),
                            "docker network rm removed the existing switch's ctl socket")
                        #expect(
                            UnixHTTPClient.answers(socket: switchDir + "/ctl"),
                            "the existing switch no longer accepts connections")
                    }
                    try run.outcome.get()
                    #expect(
                        run.stopSteps == ["close stdin"], "the test's vde_switch did not exit on EOF: \(run.stopSteps)")
                }
            }
        }

        @Test func networkRemovalLeavesNothingBehind() async throws {
            try await withDocker { supervisor, scope in
                let network = try await scope.network("gone", ["--subnet", "10.77.9.0/24"])
                let c1 = try await scope.container("c1", network: "gone", ip: "10.77.9.10")
                let c2 = try await scope.container("c2", network: "gone", ip: "10.77.9.11")
                let switchDir = try supervisor.switchDir(network: network)
                let needles = ["--network-id \(network)", network, switchDir, c1.tap, c2.tap]
                let running = HostInspector.vdeProcesses(mentioning: needles)
                #expect(running.contains { $0.program == "vde-networker" }, "no worker for the network: \(running)")
                #expect(running.contains { $0.program == "vde_switch" }, "no switch for the network: \(running)")
                #expect(TempDir.exists(switchDir + "/ctl"), "the network's switch should be at \(switchDir)")

                try await scope.removeContainer("c1")
                try await scope.removeContainer("c2")
                try await scope.removeNetwork("gone")
                try await Poll.until("worker, switch and plugs of the network to exit", deadline: .seconds(15)) {
                    HostInspector.vdeProcesses(mentioning: needles).isEmpty
                }
                for tap in [c1.tap, c2.tap] {
                    try await Poll.until("tap \(tap) to be deleted") { !HostInspector.linkExists(tap) }
                }
                let networkRunDir = try supervisor.paths(network: network).networkDir
                try await Poll.until("no sockets left below \(networkRunDir)") {
                    TempDir.sockets(under: networkRunDir).isEmpty
                }
                #expect(!supervisor.stateText().contains(network), "state file still mentions \(network)")
                #expect(
                    !supervisor.stateText().contains(c1.endpointID),
                    "state file still mentions endpoint \(c1.endpointID)")
            }
        }

        /// Docker never replays CreateNetwork/CreateEndpoint/Join: a restarted supervisor must
        /// bring the network and its containers' connectivity back from its state file.
        @Test func supervisorRestartRestoresNetworks() async throws {
            try await Docker.checkEnvironment()
            try await TempDir.with("restart") { root in
                let scope = DockerScope()
                do {
                    let network = try await SupervisorFixture.with(
                        socket: SupervisorFixture.realSocket, directory: root
                    ) { supervisor in
                        await Docker.removeLabelledLeftovers()
                        let id = try await scope.network("rs", ["--subnet", "10.77.11.0/24"])
                        try await scope.container("a", network: "rs", ip: "10.77.11.10")
                        try await scope.container("b", network: "rs", ip: "10.77.11.11")
                        let ping = try await scope.ping(from: "a", "10.77.11.11")
                        #expect(ping.succeeded, "before the restart: \(ping)")
                        return id
                    }
                    try await SupervisorFixture.with(socket: SupervisorFixture.realSocket, directory: root) {
                        supervisor in
                        #expect(
                            supervisor.stateText().contains(network),
                            "the state file lost the network across the restart")
                        try await Poll.until(
                            "a -> b to work again after the supervisor restarted", deadline: .seconds(30),
                            every: .milliseconds(500)
                        ) {
                            try await scope.ping(from: "a", "10.77.11.11", count: 1, wait: 1).succeeded
                        }
                        let ping = try await scope.ping(from: "b", "10.77.11.10")
                        #expect(ping.succeeded, "after the restart: \(ping)")
                        // A new container joins the restored network.
                        try await scope.container("c", network: "rs", ip: "10.77.11.12")
                        let toNew = try await scope.ping(from: "a", "10.77.11.12")
                        #expect(toNew.succeeded, "a -> a container started after the restart: \(toNew)")
                        let failures = await scope.cleanup()
                        #expect(
                            failures.isEmpty, "removing the containers and the network after the restart: \(failures)")
                        #expect(!supervisor.stateText().contains(network))
                    }
                } catch {
                    // Remove what is left while a plugin serves, so dockerd can reach the driver.
                    _ = try? await SupervisorFixture.with(socket: SupervisorFixture.realSocket, directory: root) { _ in
                        await scope.cleanup()
                    }
                    throw error
                }
            }
        }

        /// A worker killed with SIGKILL is restarted and re-plugs the running containers.
        @Test func killedWorkerIsRestoredWithItsContainers() async throws {
            try await withDocker { supervisor, scope in
                let network = try await scope.network("kw", ["--subnet", "10.77.12.0/24"])
                try await scope.container("a", network: "kw", ip: "10.77.12.10")
                try await scope.container("b", network: "kw", ip: "10.77.12.11")
                let before = try await scope.ping(from: "a", "10.77.12.11")
                #expect(before.succeeded, "before the kill: \(before)")
                let worker = try #require(
                    HostInspector.vdeProcesses(mentioning: ["--network-id \(network)", network]).first {
                        $0.program == "vde-networker"
                    },
                    "no vde-networker for network \(network)")
                kill(worker.pid, SIGKILL)
                try await Poll.until("a new vde-networker for the network", deadline: .seconds(30)) {
                    HostInspector.vdeProcesses(mentioning: ["--network-id \(network)", network]).contains {
                        $0.program == "vde-networker" && $0.pid != worker.pid
                    }
                }
                try await Poll.until(
                    "a -> b to work again after the worker was killed", deadline: .seconds(30),
                    every: .milliseconds(500)
                ) {
                    try await scope.ping(from: "a", "10.77.12.11", count: 1, wait: 1).succeeded
                }
                let after = try await scope.ping(from: "b", "10.77.12.10")
                #expect(after.succeeded, "after the worker was restored: \(after)")
            }
        }

        @Test func badOptionsAreClearNetworkCreateErrors() async throws {
            try await withDocker { _, scope in
                let unknown = try await scope.createNetwork(
                    "bad1", ["--subnet", "10.77.10.0/24", "-o", "bogus_option=1"])
                #expect(!unknown.succeeded, "an unknown option was accepted: \(unknown)")
                #expect(
                    unknown.stderr.contains("bogus_option") && unknown.stderr.contains("num_switchports"),
                    "the error should name the option and list the known ones: \(unknown.stderr)")
                let ports = try await scope.createNetwork(
                    "bad2", ["--subnet", "10.77.10.0/24", "-o", "num_switchports=abc"])
                #expect(!ports.succeeded, "num_switchports=abc was accepted: \(ports)")
                #expect(
                    ports.stderr.contains("num_switchports"), "the error should name num_switchports: \(ports.stderr)")
                let relative = try await scope.createNetwork(
                    "bad3", ["--subnet", "10.77.10.0/24", "-o", "socket_dir=relative/dir"])
                #expect(!relative.succeeded, "a relative socket_dir was accepted: \(relative)")
                #expect(relative.stderr.contains("socket_dir"), "the error should name socket_dir: \(relative.stderr)")
                let listed = try await Docker.check(["network", "ls", "--format", "{{.Name}}"], timeout: .seconds(30))
                    .stdout
                for base in ["bad1", "bad2", "bad3"] {
                    #expect(!listed.contains(scope.name(base)), "refused network \(scope.name(base)) exists anyway")
                }
            }
        }
    }
}

/// Sends one command to a vde_switch management socket and returns its reply text, read up
/// to the status line (`1000 Success` or `1xxx error`). The switch wants one command per read:
/// a command and `logout` sent together come back as an error.
func managementCommand(_ socket: String, _ command: String) async throws -> String {
    let raw = try await UnixHTTPClient.exchange(
        socket: socket, bytes: Array("\(command)\n".utf8), timeout: .seconds(10)
    ) { reply in
        let text = String(decoding: reply, as: UTF8.self)
        guard let data = text.range(of: "0000 DATA END WITH") ?? text.range(of: "vde$ 1") else { return false }
        return text[data.lowerBound...].split(separator: "\n").contains { line in
            line.count >= 5 && line.hasPrefix("1") && line.prefix(4).allSatisfy(\.isNumber)
                && line.dropFirst(4).first == " "
        }
    }
    return String(decoding: raw, as: UTF8.self)
}
