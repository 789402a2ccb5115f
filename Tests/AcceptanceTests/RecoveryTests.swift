import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// Faults of every part of the data path (docs/recovery.md), with real traffic: network A
    /// is hit, network B must not notice (except when the supervisor itself dies, where both
    /// networks stop by design and both must come back). After each fault: A's traffic flows
    /// again, exactly one worker, switch and plug per endpoint run, all in the supervisor's
    /// tree, nothing is left over (zombies, orphans, taps in the host, stale sockets or pid
    /// files), and `status --json` reports what really runs.
    @Suite(.timeLimit(.minutes(5)))
    struct Recovery {
        enum Fault: String, Sendable, CaseIterable {
            case worker, `switch`, plug
        }

        /// Identity of what runs, to tell what was replaced from what was left alone.
        struct Snapshot: Sendable, Equatable {
            var worker: Int32?
            var `switch`: Int32?
            var plugs: [Int32]
        }

        static func snapshot(_ lab: RecoveryLab, _ network: RecoveryLab.Network) -> Snapshot {
            let r = lab.running(network)
            return Snapshot(worker: r.workers.first, switch: r.switches.first, plugs: r.plugs)
        }

        /// Sets up the two networks under a ``SupervisorFixture`` supervisor.
        static func withLab(_ body: (RecoveryLab) async throws -> Void) async throws {
            try await SupervisorFixture.with { supervisor in
                try await RecoveryNamespaces.with(count: 4) { namespaces in
                    try await TempDir.with("rping") { dir in
                        let lab = try await RecoveryLab.build(host: supervisor, namespaces: namespaces, workDir: dir)
                        try await lab.waitUntilConsistent("the two networks before the fault")
                        try await body(lab)
                    }
                }
            }
        }

        @Test func killedWorkerIsRestartedAndRestoresItsNetwork() async throws {
            try await Self.killAndCheck(.worker)
        }

        @Test func killedSwitchIsRestartedAndReplugged() async throws {
            try await Self.killAndCheck(.switch)
        }

        @Test func killedPlugIsRestarted() async throws {
            try await Self.killAndCheck(.plug)
        }

        /// kill -9 of one child of network A, then every check of this suite.
        static func killAndCheck(_ fault: Fault) async throws {
            try await Self.withLab { lab in
                let beforeA = Self.snapshot(lab, lab.a)
                let beforeB = Self.snapshot(lab, lab.b)
                let restartsBefore = try #require(try await lab.status().network(lab.a.id)).worker.restarts
                let victim: Int32
                switch fault {
                case .worker: victim = try #require(beforeA.worker)
                case .switch: victim = try #require(beforeA.switch)
                case .plug: victim = try #require(beforeA.plugs.first)
                }
                let b = lab.b
                let summary = try await RecoveryPinger.with(
                    "B", from: b.endpoints[0].namespace, to: b.endpoints[1].address, dir: lab.workDir
                ) { pinger in
                    try await pinger.waitForReplies(20)
                    kill(victim, SIGKILL)
                    try await lab.waitForConnectivity(lab.a, deadline: .seconds(10))
                    try await lab.waitUntilConsistent(
                        "everything back after kill -9 of A's \(fault) (pid \(victim))", killed: [victim])
                    // B is still pinged a little after A has healed.
                    let seen = pinger.repliedSequences().count
                    try await pinger.waitForReplies(seen + 20)
                    return try await pinger.stop()
                }

                // B saw no loss: every probe answered but, at most, the one in flight at SIGINT.
                #expect(
                    summary.missing.allSatisfy { $0 == summary.transmitted },
                    "network B lost pings during the fault of A's \(fault): \(summary)")
                #expect(summary.errors == 0, "network B's pings met errors: \(summary)")
                #expect(summary.transmitted >= 40, "too few pings on B to mean anything: \(summary)")
                #expect(
                    Self.snapshot(lab, lab.b) == beforeB,
                    "network B's processes changed: before \(beforeB), after \(Self.snapshot(lab, lab.b))")

                let afterA = Self.snapshot(lab, lab.a)
                let statusA = try #require(try await lab.status().network(lab.a.id))
                let statusB = try #require(try await lab.status().network(lab.b.id))
                #expect(statusB.worker.restarts == 0, "B's worker restarted: \(statusB.worker)")
                switch fault {
                case .worker:
                    #expect(afterA.worker != beforeA.worker, "A's worker was not replaced: \(afterA)")
                    #expect(
                        statusA.worker.restarts == restartsBefore + 1,
                        "status should count one restart of A's worker: \(statusA.worker)")
                    #expect(
                        statusA.worker.lastError != nil, "status should say why A's worker restarted: \(statusA.worker)"
                    )
                    // The data path outlives the worker: the new one adopts the switch and plugs.
                    #expect(
                        afterA.switch == beforeA.switch && afterA.plugs == beforeA.plugs,
                        "A's switch and plugs should be adopted: before \(beforeA), after \(afterA)")
                case .switch:
                    #expect(
                        afterA.worker == beforeA.worker, "A's worker should stay: before \(beforeA), after \(afterA)")
                    #expect(afterA.switch != beforeA.switch, "A's switch was not replaced: \(afterA)")
                    #expect(
                        statusA.worker.restarts == restartsBefore,
                        "A's worker should not restart for a switch crash: \(statusA.worker)")
                    #expect(
                        Set(afterA.plugs).isDisjoint(with: beforeA.plugs),
                        "all of A's plugs exit with their switch and are new: before \(beforeA.plugs), after \(afterA.plugs)"
                    )
                case .plug:
                    #expect(
                        afterA.worker == beforeA.worker && afterA.switch == beforeA.switch,
                        "only the plug should change: before \(beforeA), after \(afterA)")
                    #expect(
                        !afterA.plugs.contains(victim), "the killed plug \(victim) is still listed: \(afterA.plugs)")
                    #expect(
                        Set(afterA.plugs).intersection(beforeA.plugs) == Set(beforeA.plugs).subtracting([victim]),
                        "A's other plug should be left alone: before \(beforeA.plugs), after \(afterA.plugs)")
                    #expect(statusA.worker.restarts == restartsBefore)
                }
                // And traffic both ways on A.
                let back = try await lab.pingOnce(lab.a, from: 1, to: 0)
                #expect(back.succeeded, "A2 -> A1 after the fault: \(back)")
            }
        }

        /// kill -9 of the supervisor and a restart: the workers keep running meanwhile, and
        /// the new supervisor adopts them (docs/recovery.md, "A new supervisor"): the same
        /// worker, switch and plug pids serve both networks, and neither loses one of its 10 ms
        /// probes (container-style endpoints: taps moved into namespaces).
        @Test func killedSupervisorIsAdoptedWithoutLoss() async throws {
            try await RecoverySupervisor.with { supervisor in
                try await RecoveryNamespaces.with(count: 4) { namespaces in
                    try await TempDir.with("rping") { dir in
                        let lab = try await RecoveryLab.build(host: supervisor, namespaces: namespaces, workDir: dir)
                        try await lab.waitUntilConsistent("the two networks before the fault")
                        let old = lab.networks.map { lab.running($0) }
                        // What the killed supervisor leaves runs on: its workers, and the detached
                        // switches (re-parented to init when it died) and plugs.
                        let workers = Set(old.flatMap { $0.workers + $0.switches + $0.plugs })
                        let stateBefore = StoredState.bytes(stateDir: supervisor.stateDir)
                        let (a, b) = (lab.a, lab.b)

                        let (summaryA, summaryB) = try await RecoveryPinger.with(
                            "A", from: a.endpoints[0].namespace, to: a.endpoints[1].address, dir: dir
                        ) { pingerA in
                            try await RecoveryPinger.with(
                                "B", from: b.endpoints[0].namespace, to: b.endpoints[1].address, dir: dir
                            ) { pingerB in
                                try await pingerA.waitForReplies(20)
                                try await pingerB.waitForReplies(20)
                                let killed = try await supervisor.kill9()
                                #expect(
                                    StoredState.bytes(stateDir: supervisor.stateDir) == stateBefore,
                                    "the state files changed while no supervisor ran")
                                try await supervisor.start()
                                try await lab.waitUntilConsistent(
                                    "both networks adopted after a supervisor restart", killed: [killed],
                                    adopted: workers)
                                // Probes go on a little after the adoption.
                                let (seenA, seenB) = (
                                    pingerA.repliedSequences().count, pingerB.repliedSequences().count
                                )
                                try await pingerA.waitForReplies(seenA + 20)
                                try await pingerB.waitForReplies(seenB + 20)
                                return (try await pingerA.stop(), try await pingerB.stop())
                            }
                        }
                        print("probes across the supervisor's kill -9 and restart: A \(summaryA); B \(summaryB)")
                        for (name, summary) in [("A", summaryA), ("B", summaryB)] {
                            // Every probe answered but, at most, the one in flight at SIGINT.
                            #expect(
                                summary.missing.allSatisfy { $0 == summary.transmitted },
                                "network \(name) lost probes across the supervisor's kill -9 and restart: \(summary)")
                            #expect(summary.errors == 0, "network \(name)'s probes met errors: \(summary)")
                            #expect(summary.transmitted >= 40, "too few probes on \(name): \(summary)")
                        }
                        let now = lab.networks.map { lab.running($0) }
                        for (before, after) in zip(old, now) {
                            #expect(
                                before.workers == after.workers && before.switches == after.switches
                                    && before.plugs == after.plugs,
                                "the adopted networks should run the same processes: before \(before), after \(after)")
                        }
                        let report = try await lab.status()
                        for network in lab.networks {
                            let worker = try #require(report.network(network.id)).worker
                            #expect(worker.restarts == 0, "no worker restart for an adoption: \(worker)")
                        }
                        #expect(
                            supervisor.logTail(200_000).contains("network adopted"),
                            "the supervisor should log the adoption")
                        let back = try await lab.pingOnce(lab.b, from: 1, to: 0)
                        #expect(back.succeeded, "B2 -> B1 after the restart: \(back)")
                    }
                }
            }
        }

        /// A supervisor killed after the worker answered an `addEndpoint` and before the state
        /// recorded it leaves an endpoint that only the worker knows: the next supervisor adopts
        /// the worker and removes it (as it undoes a failed add): its plug stops, its tap goes.
        @Test func anEndpointTheStateDoesNotRecordIsRemovedFromAnAdoptedWorker() async throws {
            try await RecoverySupervisor.with { supervisor in
                try await RecoveryNamespaces.with(count: 4) { namespaces in
                    try await TempDir.with("rping") { dir in
                        let lab = try await RecoveryLab.build(host: supervisor, namespaces: namespaces, workDir: dir)
                        try await lab.waitUntilConsistent("the two networks before the fault")
                        let workers = Set(
                            lab.networks.compactMap { lab.running($0) }.flatMap { $0.workers + $0.switches + $0.plugs })
                        let extra = EndpointID(stringLiteral: IDs.dockerID())
                        let tap = TapName(endpoint: extra)
                        defer {
                            if HostInspector.linkExists(tap.rawValue) {
                                _ = Glibc.system("\(NetNS.ip) link del \(tap.rawValue)")
                            }
                        }
                        let killed = try await supervisor.kill9()

                        // The add, over the worker's socket, with no supervisor to record it.
                        let socket = try UnixSocket.connect(to: lab.a.paths.workerSocket, timeout: .seconds(2))
                        do {
                            let request = WorkerRequest(
                                id: 1,
                                .addEndpoint(
                                    endpoint: EndpointSpec(
                                        endpointID: extra, tapName: tap, macAddress: MACAddress(derivedFrom: extra))))
                            try socket.send(
                                Array((try JSONCoding.string(request) + "\n").utf8), deadline: .now + .seconds(5))
                            let deadline = ContinuousClock.now + .seconds(15)
                            var received: [UInt8] = []
                            var answered = false
                            while !answered {
                                let chunk = try socket.receive(deadline: deadline)
                                guard !chunk.isEmpty else {
                                    throw AcceptanceFailure("the worker closed the connection")
                                }
                                received += chunk
                                while let newline = received.firstIndex(of: 0x0a) {
                                    let line = Array(received[..<newline])
                                    received.removeSubrange(...newline)
                                    if case .reply(1, .endpoint) = try JSONCoding.decode(WorkerMessage.self, from: line)
                                    {
                                        answered = true
                                    }
                                }
                            }
                        } catch {
                            socket.close()
                            throw error
                        }
                        socket.close()
                        #expect(HostInspector.linkExists(tap.rawValue), "the add made its tap")

                        try await supervisor.start()
                        try await lab.waitUntilConsistent(
                            "adopted, the unrecorded endpoint removed", killed: [killed], adopted: workers)
                        try await Poll.until("the unrecorded endpoint's tap \(tap) to be deleted") {
                            !HostInspector.linkExists(tap.rawValue)
                        }
                        #expect(!StoredState.text(stateDir: supervisor.stateDir).contains(extra.rawValue))
                        #expect(
                            supervisor.logTail(200_000).contains("runs an endpoint the state does not record"),
                            "the supervisor should log the removal")
                    }
                }
            }
        }

        /// A container removed while the supervisor was down (its namespace deleted): the
        /// restarted supervisor forgets the endpoint, frees its vde IPAM address, and nothing is
        /// left for it; the others work. With `tapMovedBack`, the tap first comes back to the
        /// host under its own name, as dockerd does when it tears a sandbox down: it must be
        /// deleted, not plugged again.
        @Test(arguments: [false, true])
        func endpointRemovedWhileSupervisorWasDownIsForgotten(tapMovedBack: Bool) async throws {
            try await RecoverySupervisor.with { supervisor in
                try await RecoveryNamespaces.with(count: 5) { namespaces in
                    try await TempDir.with("rping") { dir in
                        let lab = try await RecoveryLab.build(
                            host: supervisor, namespaces: namespaces, aEndpoints: 3, vdeIPAM: true, workDir: dir)
                        try await lab.waitUntilConsistent("the two networks before the fault")
                        let gone = lab.a.endpoints[2]
                        let poolID = try #require(lab.a.poolID)
                        #expect(StoredState.text(stateDir: supervisor.stateDir).contains(gone.id))
                        let workers = Set(
                            lab.networks.compactMap { lab.running($0) }.flatMap { $0.workers + $0.switches + $0.plugs })
                        let gonePlug = try #require(
                            try await lab.status().network(lab.a.id)?.endpoints.first { $0.id == gone.id }?.plugPID)

                        // The workers keep running; the next supervisor adopts them.
                        let killed = try await supervisor.kill9()
                        // `docker rm` of the container while the plugin is down.
                        if tapMovedBack {
                            try await gone.namespace.ip("link", "set", "dev", "eth0", "down")
                            try await gone.namespace.ip("link", "set", "dev", "eth0", "name", gone.tap)
                            try await gone.namespace.ip("link", "set", "dev", gone.tap, "netns", String(getpid()))
                            #expect(HostInspector.linkExists(gone.tap), "the tap should be back in the host netns")
                        }
                        try await Command.check([NetNS.ip, "netns", "del", gone.namespace.name], timeout: .seconds(20))
                        if !tapMovedBack {
                            // The kernel deletes the namespace (and the tap in it) a moment after
                            // `ip netns del`; the adopted worker's tap watch stops the plug then.
                            // Docker's removal happens while the supervisor is down: wait for it.
                            try await Poll.until("the removed container's plug \(gonePlug) to stop") {
                                RecoveryProcess.all()[gonePlug].map { $0.isZombie || $0.program != "vde_plug2tap" }
                                    ?? true
                            }
                        }
                        try await supervisor.start()

                        let remaining = ["A": lab.a.endpoints.prefix(2).map(\.id), "B": lab.b.endpoints.map(\.id)]
                        try await lab.waitUntilConsistent(
                            "the stale endpoint forgotten, the rest adopted", expectEndpoints: remaining,
                            killed: [killed, gonePlug], adopted: workers)
                        try await Poll.until(
                            "state.json to forget the stale endpoint \(EndpointID(stringLiteral: gone.id).short)"
                        ) {
                            !StoredState.text(stateDir: supervisor.stateDir).contains(gone.id)
                        }
                        let report = try await lab.status()
                        #expect(
                            !report.networks.flatMap(\.endpoints).contains { $0.id == gone.id },
                            "status still lists the stale endpoint")
                        #expect(
                            !HostInspector.linkExists(gone.tap),
                            "the stale endpoint's tap \(gone.tap) is in the host netns")
                        let mentioning = HostInspector.vdeProcesses(mentioning: [
                            gone.tap, gone.namespace.path, gone.id,
                        ])
                        #expect(mentioning.isEmpty, "processes left for the stale endpoint: \(mentioning)")
                        try await lab.waitForConnectivity(lab.a, deadline: .seconds(10))
                        try await lab.waitForConnectivity(lab.b, deadline: .seconds(10))

                        // Its address came from the vde pool: it is free again.
                        let again = try await supervisor.client.ok(
                            "/IpamDriver.RequestAddress",
                            DockerAPI.RequestAddressRequest(PoolID: poolID, Address: gone.address, Options: [:]),
                            as: DockerAPI.RequestAddressResponse.self)
                        #expect(
                            again.Address.hasPrefix(gone.address + "/"),
                            "the stale endpoint's address should be free again: got \(again.Address)")
                        try await supervisor.client.ok(
                            "/IpamDriver.ReleaseAddress",
                            DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: gone.address))
                    }
                }
            }
        }

        /// A worker that stops answering (SIGSTOP) is found by the heartbeat, killed and
        /// restarted; its network works again.
        @Test func hungWorkerIsKilledByTheHeartbeatAndRestarted() async throws {
            try await Self.withLab { lab in
                let stopped = try #require(lab.running(lab.a).workers.first)
                let restartsBefore = try #require(try await lab.status().network(lab.a.id)).worker.restarts
                let b = lab.b
                let beforeB = Self.snapshot(lab, lab.b)
                kill(stopped, SIGSTOP)
                defer {
                    // Never leave a stopped process behind, whatever happened.
                    if HostInspector.processState(stopped) == "T" { kill(stopped, SIGCONT) }
                }
                let summary = try await RecoveryPinger.with(
                    "B", from: b.endpoints[0].namespace, to: b.endpoints[1].address, dir: lab.workDir
                ) { pinger in
                    try await pinger.waitForReplies(20)
                    var last: RecoveryStatus.Worker?
                    do {
                        try await Poll.until(
                            "status to show A's hung worker replaced", deadline: .seconds(20), every: .milliseconds(250)
                        ) {
                            guard let worker = try await lab.status().network(lab.a.id)?.worker else { return false }
                            last = worker
                            return worker.restarts > restartsBefore && worker.state == "running"
                                && worker.pid != stopped
                        }
                    } catch {
                        throw AcceptanceFailure(
                            "\(error); last worker status: \(last.map { "\($0)" } ?? "none")\n--- supervisor log ---\n\(lab.host.logTail(6000))"
                        )
                    }
                    #expect(
                        last?.lastError?.contains("heartbeat") == true,
                        "lastError should name the missed heartbeats: \(String(describing: last))")
                    try await lab.waitForConnectivity(lab.a, deadline: .seconds(10))
                    try await lab.waitUntilConsistent("everything back after A's worker hung", killed: [stopped])
                    return try await pinger.stop()
                }
                #expect(
                    summary.missing.allSatisfy { $0 == summary.transmitted },
                    "network B lost pings while A's worker hung: \(summary)")
                #expect(Self.snapshot(lab, lab.b) == beforeB, "network B's processes changed")
            }
        }

        /// Polls until none of `pids` runs any more (a zombie of PID 1 counts as gone: reaping
        /// orphans is init's job, and this machine's PID 1 does not).
        static func waitUntilGone(_ pids: [Int32], what: String, supervisor: RecoverySupervisor) async throws {
            var left: [RecoveryProcess] = []
            do {
                try await Poll.until(what + " to exit", deadline: .seconds(10), every: .milliseconds(50)) {
                    let table = RecoveryProcess.all()
                    left = pids.compactMap { table[$0] }.filter { !$0.isZombie || $0.parent != 1 }
                    return left.isEmpty
                }
            } catch {
                throw AcceptanceFailure(
                    "\(error): still there: \(left)\n--- supervisor log ---\n\(supervisor.logTail(6000))")
            }
        }
    }
}
