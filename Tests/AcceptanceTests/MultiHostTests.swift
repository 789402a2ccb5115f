import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// One network across two hosts (issue 16), both simulated here (``MultiHostLab``): host A
    /// is the real dockerd with a container, host B a namespace with its own supervisor driven
    /// over the plugin API, joined by a veth pair. Each test uses its own multicast group
    /// 239.255.26.N and subnet 10.226.N.0/24: A hands out `.16/28`, B `.32/28`, the gateway is
    /// `.1` (the pattern of docs/multihost.md). Run alone with
    /// `swift test --skip-build --filter MultiHostTests`.
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct MultiHostTests {
        /// The two hosts with the segment's members: container `a` on A, two namespaces on B.
        struct Hosts: Sendable {
            let a: Supervisor
            let scope: DockerScope
            let networkA: String
            let container: Attachment
            /// The container's network namespace, named for host tools.
            let containerNet: NetNS
            let b: HostBSupervisor
            let networkB: HostBNetwork
            let members: [HostBMember]
            let group: String
            let subnet: String
            /// Where logs of the test's own processes go.
            let dir: String

            var uplinkA: String { MultiHostLab.uplinkA(group: group) }
            var uplinkB: String { MultiHostLab.uplinkB(group: group) }
            var ctlA: String { get throws { try a.switchDir(network: networkA) } }
        }

        enum Uplinks {
            /// `-o uplink=URL` on both hosts: the workers run them.
            case option
            /// No option; the test runs `vde_plug vde://CTL URL` on each host itself: proves the
            /// lab without the worker's part.
            case byHand
        }

        /// Sets up both hosts on segment `n`, runs `body`, takes everything down; at the end
        /// nothing of the lab may be left.
        func withHosts<T: Sendable>(_ n: Int, uplinks: Uplinks = .option, _ body: (Hosts) async throws -> T)
            async throws -> T
        {
            try await Docker.checkEnvironment()
            var runDirs: [String] = []
            var endpoints: [String] = []
            let value = try await TempDir.with("mh") { dir in
                try await MultiHostLab.withWire {
                    try await MultiHostLab.withNamespaces(count: 2) { namespaces in
                        try await SupervisorFixture.with(socket: SupervisorFixture.realSocket) { a in
                            await Docker.removeLabelledLeftovers()
                            return try await DockerScope.with { scope in
                                try await MultiHostLab.withHostB { b in
                                    runDirs = [a.runDir, b.runDir]
                                    defer { endpoints = scope.endpoints.withLock { $0 } + b.client.seen.endpoints }
                                    let hosts = try await Self.build(
                                        n, uplinks: uplinks, a: a, scope: scope, b: b, namespaces: namespaces, dir: dir)
                                    switch uplinks {
                                    case .option: return try await body(hosts)
                                    case .byHand:
                                        return try await Self.withHandStartedUplinks(hosts) { try await body(hosts) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let left = await MultiHostLab.leftovers(paths: runDirs, endpoints: endpoints)
            #expect(left.isEmpty, "the lab left: \(left)")
            return value
        }

        /// Segment `n` on both hosts: A's network through dockerd with container `a`, B's through
        /// its plugin API with a member in each of `namespaces`.
        static func build(
            _ n: Int, uplinks: Uplinks, a: Supervisor, scope: DockerScope, b: HostBSupervisor, namespaces: [NetNS],
            dir: String
        ) async throws -> Hosts {
            let group = "239.255.26.\(n)"
            let subnet = "10.226.\(n)"
            var optionsA = [
                "--ipam-driver", "vde", "--subnet", "\(subnet).0/24", "--ip-range", "\(subnet).16/28", "--gateway",
                "\(subnet).1",
            ]
            var optionsB: [String: String] = [:]
            if uplinks == .option {
                optionsA += ["-o", "uplink=" + MultiHostLab.uplinkA(group: group)]
                optionsB[NetworkOptions.uplinkKey] = MultiHostLab.uplinkB(group: group)
            }
            let networkA = try await scope.network("mh", optionsA)
            let container = try await scope.container("a", network: "mh")
            let pid = try await Docker.check(
                ["inspect", "--format", "{{.State.Pid}}", scope.name("a")], timeout: .seconds(30)
            ).stdout.trimmingWhitespace
            let containerNet = try await MultiHostLab.attach(
                container: try #require(Int32(pid), "container a has no pid: \(pid)"))
            let networkB = try await HostBNetwork.create(
                on: b, subnet: subnet, range: "\(subnet).32/28", options: optionsB)
            var members: [HostBMember] = []
            for ns in namespaces { members.append(try await networkB.join(ns)) }
            return Hosts(
                a: a, scope: scope, networkA: networkA, container: container, containerNet: containerNet, b: b,
                networkB: networkB, members: members, group: group, subnet: subnet, dir: dir)
        }

        /// `vde_plug vde://CTL URL` on each host (B's inside `mh-b`), as the worker would run them.
        static func withHandStartedUplinks<T>(_ hosts: Hosts, _ body: () async throws -> T) async throws -> T {
            let plugA = try RecoverySpawned(
                ["/usr/bin/vde_plug", "vde://" + (try hosts.ctlA), hosts.uplinkA],
                outputPath: hosts.dir + "/uplinkA.log")
            let plugB: RecoverySpawned
            do {
                plugB = try RecoverySpawned(
                    [
                        NetNS.ip, "netns", "exec", MultiHostLab.hostB.name, "/usr/bin/vde_plug",
                        "vde://" + hosts.networkB.paths.ctlDir, hosts.uplinkB,
                    ], outputPath: hosts.dir + "/uplinkB.log")
            } catch {
                await plugA.stop()
                throw error
            }
            let outcome: Result<T, any Error>
            do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            await plugB.stop()
            await plugA.stop()
            return try outcome.get()
        }

        // MARK: traffic

        /// Polls single pings from container `a` to `address` until one is answered (the first
        /// crosses only once both uplinks have joined the group).
        static func waitForPing(_ hosts: Hosts, to address: String) async throws {
            var last: CommandResult?
            do {
                try await Poll.until("container a to reach \(address) on host B", deadline: .seconds(20)) {
                    last = try await hosts.containerNet.exec(
                        [RecoveryPinger.ping, "-n", "-c", "1", "-W", "1", address], timeout: .seconds(10))
                    return last?.succeeded ?? false
                }
            } catch {
                throw AcceptanceFailure(
                    "\(error); last ping: \(last.map(String.init(describing:)) ?? "none")\n--- host B ---\n\(hosts.b.logTail(3000))"
                )
            }
        }

        /// Container `a` pings a namespace of B and back, and an ARP broadcast from B's other
        /// namespace (which never spoke to `a`) reaches `a` and is answered.
        static func checkPingsAndARP(_ hosts: Hosts) async throws {
            let (m1, m2) = (hosts.members[0], hosts.members[1])
            let aIP = hosts.container.ipAddress
            try await waitForPing(hosts, to: m1.ip)
            let there = try await hosts.scope.ping(from: "a", m1.ip)
            #expect(there.succeeded, "container a (host A) -> \(m1.ip) (host B): \(there)")
            let back = try await m1.namespace.ping(aIP)
            #expect(back.succeeded, "\(m1.ip) (host B) -> container a \(aIP) (host A): \(back)")
            // -b: every request a broadcast, not unicast after the first reply.
            let arp = try await m2.namespace.exec(
                [NetNS.busybox, "arping", "-b", "-f", "-c", "3", "-w", "3", "-I", "eth0", aIP], timeout: .seconds(20))
            #expect(
                arp.succeeded && arp.stdout.lowercased().contains(hosts.container.macAddress.lowercased()),
                "a broadcast ARP request from host B should reach container a and be answered by its MAC \(hosts.container.macAddress): \(arp)"
            )
            let neighbours = try await hosts.scope.exec("a", ["ip", "neigh", "show"]).stdout.lowercased()
            #expect(
                neighbours.contains(m2.mac.lowercased()),
                "container a should have learnt host B's \(m2.mac) from its ARP request: \(neighbours)")
        }

        /// busybox `udhcpd` in container `a` (host A) leases an address to busybox `udhcpc` in
        /// host B's second namespace: DHCP's broadcasts cross both ways.
        static func checkDHCP(_ hosts: Hosts) async throws {
            let pool = (first: "\(hosts.subnet).100", last: "\(hosts.subnet).120")
            try await VMTests.serveDHCP(hosts.scope, "a", pool: pool)
            // udhcpc's script only records the lease: the namespace keeps its address.
            let leaseFile = hosts.dir + "/lease"
            let script = hosts.dir + "/udhcpc.sh"
            try "#!/bin/sh\ncase \"$1\" in bound|renew) echo \"$ip\" >\(leaseFile) ;; esac\n".write(
                toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            let client = try await hosts.members[1].namespace.exec(
                [NetNS.busybox, "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-i", "eth0", "-s", script],
                timeout: .seconds(40))
            let lease = TempDir.readText(leaseFile)?.trimmingWhitespace ?? ""
            #expect(
                client.succeeded && VMTests.inPool(lease, pool),
                "udhcpc on host B should get a lease from udhcpd on host A in \(pool), got '\(lease)': \(client)")
        }

        /// Both hosts' interfaces get the uplink's default MTU, and a full frame of it crosses
        /// with DF set as one datagram on the 1500-byte wire (1450 + 14 Ethernet + 8 vxvde + 8 UDP
        /// + 20 IP = 1500): 5 echo requests add fewer than 10 packets to what `vxmA` sent, which
        /// they would reach if vde_plug's datagrams were fragmented.
        static func checkMTU(_ hosts: Hosts) async throws {
            let expected = try UplinkURL(hosts.uplinkA).defaultMTU
            let mtuA = try await hosts.containerNet.mtu()
            let mtuB = try await hosts.members[0].namespace.mtu()
            let sentBefore = MultiHostLab.wireASentPackets()
            let full = try await hosts.containerNet.exec(
                [
                    RecoveryPinger.ping, "-n", "-c", "5", "-i", "0.2", "-W", "2", "-M", "do", "-s", "\(expected - 28)",
                    hosts.members[0].ip,
                ],
                timeout: .seconds(20))
            let sent = MultiHostLab.wireASentPackets() - sentBefore
            print(
                "note: MTU with uplink \(hosts.uplinkA): container a \(mtuA ?? -1), host B's namespace \(mtuB ?? -1); 5 pings of \(expected) bytes with DF: \(sent) packets on \(MultiHostLab.wireA)"
            )
            #expect(mtuA == expected && mtuB == expected, "both hosts' interfaces should have MTU \(expected)")
            #expect(full.succeeded, "\(expected)-byte packets with DF should cross from A to B: \(full)")
            #expect(
                sent >= 5 && sent < 10, "5 full frames should cross as 5 datagrams, \(MultiHostLab.wireA) sent \(sent)")
        }

        // MARK: status

        /// What one host's `status` knows of its side of the segment.
        struct Side: Sendable {
            let name: String
            let controlSocket: String
            let network: String
            let log: @Sendable () -> String

            func status() async throws -> StatusDoc.Network {
                let report = try await StatusCLI.checkedJSON(socket: controlSocket).report
                return try #require(report.network(network), "host \(name)'s status lacks network \(network)")
            }

            func uplink() async throws -> StatusDoc.Uplink {
                let network = try await status()
                return try #require(network.uplink, "host \(name)'s status shows no uplink: \(network)")
            }
        }

        static func sides(_ hosts: Hosts) -> [Side] {
            let (a, b) = (hosts.a, hosts.b)
            return [
                Side(name: "A", controlSocket: a.statusControlSocket, network: hosts.networkA) { a.logTail(4000) },
                Side(name: "B", controlSocket: b.controlSocket, network: hosts.networkB.id) { b.logTail(4000) },
            ]
        }

        /// Each host's status shows its uplink running with its URL (JSON and table), and its
        /// frame counts grow both ways while the hosts ping each other.
        static func checkStatus(_ hosts: Hosts) async throws {
            for (side, url) in zip(sides(hosts), [hosts.uplinkA, hosts.uplinkB]) {
                let before = try await side.uplink()
                #expect(before.url == url && before.state == "running", "host \(side.name)'s uplink: \(before)")
                let pings = try await hosts.scope.ping(from: "a", hosts.members[0].ip, count: 5, wait: 1)
                #expect(pings.succeeded, "\(pings)")
                let after = try await side.uplink()
                let (b, c) = (try #require(before.counters), try #require(after.counters))
                print("note: host \(side.name)'s uplink counters: \(b) -> \(c)")
                #expect(
                    c.inPackets >= b.inPackets + 5 && c.outPackets >= b.outPackets + 5,
                    "host \(side.name)'s uplink should count 5 frames each way more: \(b) -> \(c)")
                let table = try await StatusCLI.run([], socket: side.controlSocket)
                #expect(
                    table.stdout.contains("UPLINK") && table.stdout.contains(url),
                    "host \(side.name)'s status table should show the uplink line: \(table)")
            }
        }

        /// `docker network rm` on A: A's uplink stops with the network; B's two members still
        /// reach each other and B's uplink runs on.
        static func checkRemovalOnA(_ hosts: Hosts) async throws {
            let ctlA = try hosts.ctlA
            try await hosts.scope.removeContainer("a")
            try await hosts.scope.removeNetwork("mh")
            try await Poll.until("host A's uplink to stop with its network", deadline: .seconds(20)) {
                HostInspector.vdeProcesses(mentioning: [ctlA]).isEmpty
            }
            let (m1, m2) = (hosts.members[0], hosts.members[1])
            let ping = try await m1.namespace.ping(m2.ip)
            #expect(ping.succeeded, "host B's members after A removed the network: \(ping)")
            let b = sides(hosts)[1]
            let network = try await b.status()
            #expect(
                network.uplink?.state == "running" && network.healthy,
                "host B's uplink should run on after A removed its network: \(String(describing: network.uplink))")
        }

        /// Then B removes its members and its network as dockerd would: its uplink stops too.
        static func checkRemovalOnB(_ hosts: Hosts) async throws {
            for member in hosts.members { try await hosts.networkB.remove(member) }
            try await hosts.networkB.delete()
            let ctlB = hosts.networkB.paths.ctlDir
            try await Poll.until("host B's uplink to stop with its network", deadline: .seconds(20)) {
                HostInspector.vdeProcesses(mentioning: [ctlB]).isEmpty
            }
        }

        // MARK: tests

        /// The lab alone: with `vde_plug` started by hand on each host, a container on A and a
        /// namespace on B share a segment. If this fails, the uplink tests below say nothing.
        @Test func labCarriesTheSegmentWithHandStartedUplinks() async throws {
            try await withHosts(1, uplinks: .byHand) { hosts in
                try await Self.checkPingsAndARP(hosts)
                try await Self.checkDHCP(hosts)
            }
        }

        /// A container on host A and namespaces on host B, each host's network with `-o uplink`:
        /// one segment (pings both ways, ARP, DHCP), the uplink's MTU, the status line; then A
        /// removes its network and B's segment goes on, until B removes its own.
        @Test func oneNetworkAcrossTwoHosts() async throws {
            try await withHosts(2) { hosts in
                try await Self.checkPingsAndARP(hosts)
                try await Self.checkDHCP(hosts)
                try await Self.checkMTU(hosts)
                try await Self.checkStatus(hosts)
                try await Self.checkRemovalOnA(hosts)
                try await Self.checkRemovalOnB(hosts)
            }
        }
        /// Kill -9 of each host's uplink, then of each host's worker. Each fault is measured
        /// with a ping every 100 ms from the OTHER host to the faulted host's member: the
        /// direction that needs the other side to relearn where that member is (a restarted
        /// uplink sends from a new UDP port, and the faulted host sends nothing until a request
        /// reaches it), which the worker's announcement after each uplink start is for. Measured
        /// here (2026-12-02): 0 or 1 probe lost with it; with vde_plug restarted by hand and no
        /// announcement, 12 in a row once (healed by the namespace's own IPv6 chatter), so this
        /// bound does not reliably catch a missing announcement. After each fault the path is
        /// back within a second: at most 10 probes in a row unanswered (the figures are printed).
        /// The uplink is restarted and `status` counts it; a killed worker's successor adopts
        /// the running uplink. Last, kill -9 of host B's supervisor, pings answered while none
        /// runs, and a new one on the same sockets and dirs: it adopts the worker, whose uplink
        /// runs on untouched (same pid, same restart count; issue 16's "state restored after a
        /// supervisor restart"). Host A's supervisor is the fixture dockerd uses and is not
        /// restarted here; both run the same code.
        @Test func killsOfUplinkAndWorkerCostUnderASecond() async throws {
            try await withHosts(3) { hosts in
                let m1 = hosts.members[0]
                try await Self.waitForPing(hosts, to: m1.ip)
                let (sideA, sideB) = (Self.sides(hosts)[0], Self.sides(hosts)[1])
                // To the faulted host's member, from the other host.
                let probes = [
                    "A": (label: "B -> A", from: m1.namespace, to: hosts.container.ipAddress),
                    "B": (label: "A -> B", from: hosts.containerNet, to: m1.ip),
                ]
                var results: [(fault: String, summary: RecoveryPinger.Summary)] = []
                let faults: [(Side, Fault)] = [
                    (sideA, .uplink), (sideB, .uplink), (sideA, .worker), (sideB, .worker), (sideB, .supervisor),
                ]
                for (side, kind) in faults {
                    let probe = try #require(probes[side.name])
                    let fault = "kill -9 of host \(side.name)'s \(kind), \(probe.label)"
                    let summary = try await RecoveryPinger.with(
                        probe.label, from: probe.from, to: probe.to, dir: hosts.dir, interval: "0.1"
                    ) { pinger in
                        try await pinger.waitForReplies(20)
                        switch kind {
                        case .uplink: try await Self.killUplink(side)
                        case .worker: try await Self.killWorker(side)
                        case .supervisor:
                            try await Self.restartSupervisorB(hosts, side) {
                                // The data path needs no supervisor: 10 replies while none runs.
                                try await pinger.waitForReplies(
                                    pinger.repliedSequences().count + 10, deadline: .seconds(20))
                            }
                        }
                        // Hard: a path that stays cut fails here, not as a short loss run.
                        try await pinger.waitForReplies(pinger.repliedSequences().count + 20, deadline: .seconds(20))
                        return try await pinger.stop()
                    }
                    print(
                        "note: \(fault) every 100 ms: \(summary.transmitted) sent, longest loss \(summary.longestLossRun) in a row, runs (first icmp_seq, length) \(summary.lossRuns)"
                    )
                    results.append((fault, summary))
                }
                for (fault, summary) in results {
                    #expect(
                        summary.longestLossRun <= 10,
                        "\(fault): \(summary.longestLossRun) probes in a row lost (over 1 s): \(summary)")
                }
            }
        }

        enum Fault: String, CustomStringConvertible {
            case uplink, worker, supervisor
            var description: String { rawValue }
        }

        /// kill -9 of the side's uplink (the pid its status names, checked to be `vde_plug`):
        /// a new one runs and status counts the restart.
        static func killUplink(_ side: Side) async throws {
            let before = try await side.uplink()
            let pid = try #require(before.pid, "host \(side.name)'s uplink has no pid: \(before)")
            let argv = StatusHost.argv(of: pid) ?? []
            #expect(StatusHost.program(argv) == "vde_plug", "host \(side.name)'s uplink pid \(pid) runs \(argv)")
            kill(pid, SIGKILL)
            var last = before
            do {
                try await Poll.until("host \(side.name)'s uplink to run again", deadline: .seconds(10)) {
                    last = try await side.uplink()
                    return last.state == "running" && last.pid != nil && last.pid != pid
                }
            } catch {
                throw AcceptanceFailure("\(error); last status: \(last)\n--- log ---\n\(side.log())")
            }
            #expect(
                last.restarts == before.restarts + 1,
                "host \(side.name)'s status should count the restart: \(before.restarts) -> \(last.restarts)")
        }

        /// kill -9 of the side's worker: a new worker runs and adopts the uplink (same pid).
        static func killWorker(_ side: Side) async throws {
            let before = try await side.status()
            let worker = try #require(before.worker.pid, "host \(side.name)'s worker has no pid")
            let uplink = try #require(before.uplink?.pid, "host \(side.name)'s uplink has no pid")
            kill(worker, SIGKILL)
            var last = before
            do {
                try await Poll.until("a new worker on host \(side.name)", deadline: .seconds(20)) {
                    last = try await side.status()
                    return last.worker.state == "running" && last.worker.pid != nil && last.worker.pid != worker
                        && last.uplink?.state == "running"
                }
            } catch {
                throw AcceptanceFailure(
                    "\(error); last status: \(last.worker), \(String(describing: last.uplink))\n--- log ---\n\(side.log())"
                )
            }
            #expect(
                last.uplink?.pid == uplink,
                "host \(side.name)'s new worker should adopt the running uplink \(uplink), status names \(String(describing: last.uplink?.pid))"
            )
        }

        /// kill -9 of host B's supervisor (`side` is B); `whileDown` runs before another starts
        /// on the same sockets, state and run dirs. The new one's status (its own pid) shows the
        /// same worker, adopted, and the same uplink: running, same pid and URL, restarts
        /// unchanged, the network healthy.
        static func restartSupervisorB(_ hosts: Hosts, _ side: Side, whileDown: () async throws -> Void)
            async throws
        {
            let before = try await side.status()
            let worker = try #require(before.worker.pid, "host B's worker has no pid")
            let uplink = try #require(before.uplink, "host B's status shows no uplink")
            let uplinkPID = try #require(uplink.pid, "host B's uplink has no pid: \(uplink)")
            let old = try await hosts.b.kill9()
            try await whileDown()
            for (what, pid, program) in [("worker", worker, "vde-networker"), ("uplink", uplinkPID, "vde_plug")] {
                let argv = StatusHost.argv(of: pid) ?? []
                #expect(
                    StatusHost.program(argv) == program,
                    "host B's \(what) \(pid) should outlive its supervisor \(old), runs \(argv)")
            }
            let new = try await hosts.b.start()
            var last: StatusDoc.Network?
            do {
                try await Poll.until("host B's new supervisor \(new) to adopt its worker", deadline: .seconds(20)) {
                    // The control socket may answer a moment after the plugin socket.
                    guard let report = try? await StatusCLI.checkedJSON(socket: side.controlSocket).report,
                        report.supervisor.pid == new
                    else { return false }
                    last = report.network(side.network)
                    return last?.worker.state == "running" && last?.uplink?.state == "running"
                        && last?.healthy == true
                }
            } catch {
                throw AcceptanceFailure(
                    "\(error); last status: \(String(describing: last))\n--- log ---\n\(side.log())")
            }
            let after = try #require(last)
            print(
                "note: host B's supervisor \(old) killed, \(new) adopted worker \(String(describing: after.worker.pid)) with uplink \(String(describing: after.uplink))"
            )
            #expect(
                after.worker.pid == worker, "host B's new supervisor should adopt worker \(worker): \(after.worker)")
            #expect(
                after.uplink?.pid == uplinkPID && after.uplink?.url == uplink.url
                    && after.uplink?.restarts == uplink.restarts,
                "host B's uplink should run on untouched across the supervisor restart: \(uplink) -> \(String(describing: after.uplink))"
            )
        }
    }
}
