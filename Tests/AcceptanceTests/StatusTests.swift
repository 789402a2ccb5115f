import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// `vde-supervisor status` as an operator runs it: the real binary against the fixture's
    /// private control socket, its `--json` checked against docs/status.md and against what
    /// really runs on the host, its table read as text.
    @Suite(.timeLimit(.minutes(5)))
    struct StatusTests {
        /// Two networks, one with two joined endpoints: everything documented is there, right,
        /// and true of the host.
        @Test func healthyNetworksAreReportedInFull() async throws {
            try await SupervisorFixture.with { supervisor in
                try await NetNS.with(count: 2) { namespaces in
                    let client = supervisor.client
                    let socket = supervisor.statusControlSocket
                    let netA = IDs.dockerID()
                    let netB = IDs.dockerID()
                    try await StatusLab.createNetwork(client, netA, pool: "10.205.0.0/24", gateway: "10.205.0.1/24")
                    try await StatusLab.createNetwork(client, netB, pool: "10.205.1.0/24", gateway: "10.205.1.1/24")
                    try await StatusLab.withEndpoints(
                        client, network: netA,
                        [("10.205.0.10/24", namespaces[0]), ("10.205.0.11/24", namespaces[1])]
                    ) { endpoints in
                        // Join has answered; give the plugs a moment to hold their ports.
                        let (run, report) = try await Self.healthyStatus(socket: socket)
                        #expect(run.exitCode == 0, "all healthy must exit 0: \(run)")
                        #expect(report.schemaVersion == 1)
                        #expect(report.healthy)

                        #expect(report.supervisor.pid == supervisor.process.pid, "supervisor pid: \(report.supervisor)")
                        #expect(report.supervisor.pluginSocket == supervisor.socket)
                        #expect(report.supervisor.stateDir == supervisor.stateDir)
                        #expect(report.supervisor.uptimeSeconds >= 0)
                        #expect(!report.supervisor.statusLine.isEmpty)

                        #expect(
                            report.networks.map(\.id).sorted() == [netA, netB].sorted(),
                            "networks: \(report.networks.map(\.id))")
                        let a = try #require(report.network(netA))
                        let b = try #require(report.network(netB))
                        try Self.checkOwnNetwork(
                            a, supervisor: supervisor, subnet: "10.205.0.0/24", gateway: "10.205.0.1")
                        try Self.checkOwnNetwork(
                            b, supervisor: supervisor, subnet: "10.205.1.0/24", gateway: "10.205.1.1")
                        #expect(a.switch.pid != b.switch.pid, "two networks share a switch pid")
                        #expect(a.worker.pid != b.worker.pid, "two networks share a worker pid")
                        #expect(
                            b.endpoints.isEmpty && b.otherPorts.isEmpty, "network B has no endpoints: \(b.endpoints)")

                        #expect(a.endpoints.map(\.id).sorted() == endpoints.map(\.id).sorted())
                        for expected in endpoints {
                            let e = try #require(a.endpoint(expected.id), "endpoint \(expected.id) missing")
                            try Self.checkPluggedEndpoint(e, expected: expected, network: a)
                        }
                        let ports = a.endpoints.compactMap(\.switchPort)
                        #expect(Set(ports).count == ports.count, "two endpoints on one switch port: \(ports)")
                        #expect(a.otherPorts.isEmpty, "nothing but our plugs is on the switch: \(a.otherPorts)")

                        // The table, on a pipe: no escape codes, the IDs and the states.
                        let table = try await StatusCLI.run([], socket: socket)
                        #expect(table.exitCode == 0, "\(table)")
                        #expect(
                            !table.stdout.contains("\u{1B}"),
                            "escape codes without a terminal: \(table.stdout.debugDescription)")
                        for needle in [a.shortID, b.shortID, "running", "plugged", a.switch.ctlDir]
                            + endpoints.map(\.tap) + endpoints.map(\.ip)
                        {
                            #expect(table.stdout.contains(needle), "the table lacks \(needle):\n\(table.stdout)")
                        }
                        #expect(
                            !table.stdout.contains(netA) && !table.stdout.contains(netB),
                            "the table should show short IDs only:\n\(table.stdout)")

                        // One network by prefix.
                        let prefix = String(netA.prefix(8))
                        try #require(!netB.hasPrefix(prefix))
                        let one = try await StatusCLI.checkedJSON([prefix], socket: socket)
                        #expect(one.run.exitCode == 0, "\(one.run)")
                        #expect(
                            one.report.networks.map(\.id) == [netA],
                            "status \(prefix) must show only \(netA): \(one.report.networks.map(\.id))")
                        let oneTable = try await StatusCLI.run([prefix], socket: socket)
                        #expect(oneTable.exitCode == 0, "\(oneTable)")
                        #expect(
                            oneTable.stdout.contains(a.shortID) && !oneTable.stdout.contains(b.shortID),
                            "status \(prefix) must show \(a.shortID) and not \(b.shortID):\n\(oneTable.stdout)")
                        for tap in endpoints.map(\.tap) {
                            #expect(
                                oneTable.stdout.contains(tap),
                                "status \(prefix) lacks endpoint \(tap):\n\(oneTable.stdout)")
                        }

                        // A prefix no network has.
                        var unknown = try NetworkID(IDs.dockerID()).short
                        while netA.hasPrefix(unknown) || netB.hasPrefix(unknown) {
                            unknown = try NetworkID(IDs.dockerID()).short
                        }
                        let none = try await StatusCLI.run([unknown], socket: socket)
                        #expect(none.exitCode == 1, "an unknown prefix must exit 1: \(none)")
                        #expect(none.stderr.contains(unknown), "the message should name the prefix: \(none)")
                        #expect(
                            !none.stdout.contains(a.shortID) && !none.stdout.contains(b.shortID),
                            "an unknown prefix showed networks: \(none)")
                    }
                    try await StatusLab.deleteNetwork(client, netA)
                    try await StatusLab.deleteNetwork(client, netB)
                    let after = try await StatusCLI.checkedJSON(socket: socket)
                    #expect(
                        after.run.exitCode == 0 && after.report.networks.isEmpty,
                        "deleted networks still shown: \(after.run)")
                }
            }
        }

        /// 20 pings between the two namespaces show up in both endpoints' counters, both ways.
        @Test func countersGrowAfterAPing() async throws {
            try await SupervisorFixture.with { supervisor in
                try await NetNS.with(count: 2) { namespaces in
                    let client = supervisor.client
                    let socket = supervisor.statusControlSocket
                    let network = IDs.dockerID()
                    try await StatusLab.createNetwork(client, network, pool: "10.205.2.0/24", gateway: "10.205.2.1/24")
                    try await StatusLab.withEndpoints(
                        client, network: network,
                        [("10.205.2.10/24", namespaces[0]), ("10.205.2.11/24", namespaces[1])]
                    ) { endpoints in
                        let before = try await Self.healthyStatus(socket: socket).report
                        let counted = try Self.counters(before, network: network, endpoints: endpoints)

                        let ping = try await endpoints[0].namespace.exec(
                            [NetNS.busybox, "ping", "-A", "-c", "20", "-W", "2", endpoints[1].ip], timeout: .seconds(60)
                        )
                        #expect(ping.succeeded, "20 pings \(endpoints[0].ip) -> \(endpoints[1].ip): \(ping)")

                        var last = before
                        let grown: (StatusDoc.Counters, StatusDoc.Counters) -> Bool = { old, new in
                            new.inPackets >= old.inPackets + 20 && new.outPackets >= old.outPackets + 20
                                && new.inBytes > old.inBytes && new.outBytes > old.outBytes
                        }
                        // The switch counts as it forwards; polling only absorbs the read's latency.
                        let reached =
                            (try? await Poll.until(
                                "both endpoints' counters to grow by 20 packets each way", deadline: .seconds(10),
                                every: .milliseconds(200)
                            ) {
                                last = try await StatusCLI.checkedJSON(socket: socket).report
                                let now = try Self.counters(last, network: network, endpoints: endpoints)
                                return zip(counted, now).allSatisfy { grown($0, $1) }
                            }) != nil
                        let after = try Self.counters(last, network: network, endpoints: endpoints)
                        for (i, endpoint) in endpoints.enumerated() {
                            #expect(
                                grown(counted[i], after[i]),
                                "endpoint \(endpoint.tap) (\(endpoint.ip)): before \(counted[i]), after \(after[i]); expected +20 packets in and out"
                            )
                        }
                        #expect(reached)
                        // The table has the counter columns, filled in.
                        let table = try await StatusCLI.run([NetworkID(network).short], socket: socket)
                        #expect(table.exitCode == 0, "\(table)")
                        #expect(
                            table.stdout.contains("SENT PKTS/BYTES") && table.stdout.contains("RECEIVED PKTS/BYTES"),
                            "the table should have counter columns:\n\(table.stdout)")
                    }
                    try await StatusLab.deleteNetwork(client, network)
                }
            }
        }

        /// A worker killed with SIGKILL is restarted: status shows the restart, the error and
        /// the new pid, exits 1 while anything is degraded and 0 once all is back.
        @Test func killedWorkerIsRestartedAndShownSo() async throws {
            try await SupervisorFixture.with { supervisor in
                try await NetNS.with(count: 2) { namespaces in
                    let client = supervisor.client
                    let socket = supervisor.statusControlSocket
                    let network = IDs.dockerID()
                    try await StatusLab.createNetwork(client, network, pool: "10.205.3.0/24", gateway: "10.205.3.1/24")
                    try await StatusLab.withEndpoints(
                        client, network: network,
                        [("10.205.3.10/24", namespaces[0]), ("10.205.3.11/24", namespaces[1])]
                    ) { endpoints in
                        let before = try #require(try await Self.healthyStatus(socket: socket).report.network(network))
                        let oldWorker = try #require(before.worker.pid)
                        #expect(before.worker.restarts == 0)
                        let oldArgv = StatusHost.argv(of: oldWorker) ?? []
                        try #require(
                            StatusHost.program(oldArgv) == "vde-networker"
                                && StatusHost.has(oldArgv, "--network-id", network),
                            "worker pid \(oldWorker) is not `vde-networker --network-id \(network)`: \(oldArgv)")

                        #expect(kill(oldWorker, SIGKILL) == 0)
                        var states: [String] = []
                        var last: (run: StatusRun, report: StatusDoc)?
                        do {
                            try await Poll.until(
                                "status to show the worker restarted, running and healthy", deadline: .seconds(40),
                                every: .milliseconds(50)
                            ) {
                                let sample = try await StatusCLI.checkedJSON(socket: socket)
                                last = sample
                                let n = try #require(sample.report.network(network))
                                let seen =
                                    "\(n.worker.state) pid \(n.worker.pid.map(String.init) ?? "-") restarts \(n.worker.restarts) exit \(sample.run.exitCode.map(String.init) ?? "-")"
                                if states.last != seen { states.append(seen) }
                                // Every sample: exit code and health agree, and a worker that is not running is degraded.
                                #expect(
                                    sample.run.exitCode == (sample.report.healthy ? 0 : 1),
                                    "exit code and healthy disagree: \(sample.run)")
                                if n.worker.state != "running" {
                                    #expect(
                                        sample.run.exitCode == 1 && !n.healthy && !sample.report.healthy,
                                        "worker \(n.worker.state): status must report degraded and exit 1: \(sample.run)"
                                    )
                                }
                                return n.worker.state == "running" && n.worker.restarts >= 1 && n.worker.pid != nil
                                    && n.worker.pid != oldWorker && sample.run.exitCode == 0
                            }
                        } catch {
                            throw AcceptanceFailure(
                                "\(error); killed worker \(oldWorker); worker states seen: \(states); last status: \(last.map { "\($0.run)" } ?? "none")"
                                    + "\n--- supervisor log without status calls ---\n\(supervisor.logWithoutStatusCalls())"
                            )
                        }
                        let after = try #require(last?.report.network(network))
                        #expect(after.worker.restarts >= 1)
                        #expect(
                            !(after.worker.lastError ?? "").isEmpty,
                            "lastError should say why the worker was restarted: \(after.worker)")
                        let newWorker = try #require(after.worker.pid)
                        #expect(newWorker != oldWorker)
                        let argv = StatusHost.argv(of: newWorker) ?? []
                        #expect(
                            StatusHost.program(argv) == "vde-networker"
                                && StatusHost.has(argv, "--network-id", network),
                            "worker pid \(newWorker) is not `vde-networker --network-id \(network)`: \(argv)")
                        #expect(StatusHost.argv(of: oldWorker) == nil, "the killed worker \(oldWorker) still runs")
                        for expected in endpoints {
                            let e = try #require(after.endpoint(expected.id))
                            try Self.checkPluggedEndpoint(e, expected: expected, network: after)
                        }
                        // The table says so too.
                        let table = try await StatusCLI.run([], socket: socket)
                        #expect(table.exitCode == 0, "\(table)")
                        #expect(
                            table.stdout.contains(String(newWorker)),
                            "the table should show the new worker pid \(newWorker):\n\(table.stdout)")
                        // And the restored data path carries traffic.
                        let ping = try await endpoints[0].namespace.ping(endpoints[1].ip)
                        #expect(ping.succeeded, "ping across the switch after the worker restart: \(ping)")
                    }
                    try await StatusLab.deleteNetwork(client, network)
                }
            }
        }

        /// A stopped (SIGSTOP) worker is shown as unresponsive within about two seconds, the
        /// command exits 1 and returns promptly instead of hanging; after SIGCONT all is well.
        @Test func stoppedWorkerIsUnresponsiveAndStatusDoesNotHang() async throws {
            try await SupervisorFixture.with { supervisor in
                try await NetNS.with(count: 1) { namespaces in
                    let client = supervisor.client
                    let socket = supervisor.statusControlSocket
                    let network = IDs.dockerID()
                    try await StatusLab.createNetwork(client, network, pool: "10.205.4.0/24", gateway: "10.205.4.1/24")
                    try await StatusLab.withEndpoints(client, network: network, [("10.205.4.10/24", namespaces[0])]) {
                        endpoints in
                        let before = try #require(try await Self.healthyStatus(socket: socket).report.network(network))
                        let worker = try #require(before.worker.pid)
                        let argv = StatusHost.argv(of: worker) ?? []
                        try #require(
                            StatusHost.program(argv) == "vde-networker"
                                && StatusHost.has(argv, "--network-id", network),
                            "worker pid \(worker) is not `vde-networker --network-id \(network)`: \(argv)")

                        #expect(kill(worker, SIGSTOP) == 0)
                        do {
                            var runs: [StatusRun] = []
                            let stopped = ContinuousClock.now
                            let seen: (run: StatusRun, report: StatusDoc)
                            do {
                                seen = try await Poll.value(
                                    "status to show the stopped worker as unresponsive", deadline: .seconds(3),
                                    every: .milliseconds(50)
                                ) {
                                    let sample = try await StatusCLI.checkedJSON(socket: socket, timeout: .seconds(15))
                                    runs.append(sample.run)
                                    return sample.report.network(network)?.worker.state == "unresponsive" ? sample : nil
                                }
                            } catch {
                                throw AcceptanceFailure(
                                    "\(error); runs: \(runs.map(\.description).joined(separator: "\n"))")
                            }
                            let noticed = ContinuousClock.now - stopped
                            for run in runs {
                                #expect(
                                    run.elapsed < .seconds(3),
                                    "status took \(run.elapsed) with a stopped worker (hang check): \(run)")
                            }
                            #expect(
                                noticed < .seconds(4),
                                "the stopped worker was reported unresponsive only after \(noticed)")
                            #expect(seen.run.exitCode == 1, "an unresponsive worker must exit 1: \(seen.run)")
                            #expect(!seen.report.healthy)
                            let n = try #require(seen.report.network(network))
                            #expect(!n.healthy)
                            #expect(n.worker.pid == worker, "the stopped worker keeps its pid: \(n.worker)")
                            let e = try #require(n.endpoint(endpoints[0].id))
                            #expect(
                                e.state == "unknown", "an endpoint whose worker did not answer is `unknown`: \(e.state)"
                            )
                            #expect(e.sandbox == endpoints[0].namespace.path)

                            let table = try await StatusCLI.run([], socket: socket, timeout: .seconds(15))
                            #expect(
                                table.elapsed < .seconds(3),
                                "the table took \(table.elapsed) with a stopped worker (hang check)")
                            #expect(table.exitCode == 1, "\(table)")
                            #expect(
                                table.stdout.contains("unresponsive"),
                                "the table should say unresponsive:\n\(table.stdout)")
                        } catch {
                            kill(worker, SIGCONT)
                            throw error
                        }
                        kill(worker, SIGCONT)

                        // Continued (or, had the heartbeat given up meanwhile, restarted): healthy again.
                        let recovered = try await Self.healthyStatus(socket: socket, deadline: .seconds(40))
                        let n = try #require(recovered.report.network(network))
                        #expect(n.worker.state == "running")
                        let e = try #require(n.endpoint(endpoints[0].id))
                        try Self.checkPluggedEndpoint(e, expected: endpoints[0], network: n)
                    }
                    try await StatusLab.deleteNetwork(client, network)
                }
            }
        }

        /// A switch the test runs (with a held stdin) is shown as external, with its ctl dir and
        /// the endpoint's counters; a plug the test attaches appears among the other ports.
        @Test func externalSwitchAndItsOtherPorts() async throws {
            try HostRequirements.check()
            try await TempDir.with("stx") { dir in
                let ctlDir = dir + "/ctl"
                let management = dir + "/mgmt"
                let switchRun = try await Background.with(
                    ["/usr/bin/vde_switch", "-s", ctlDir, "-M", management],
                    logPath: dir + "/switch.log", stop: .closeStdin
                ) { vdeSwitch in
                    try await Poll.until("the test's vde_switch to listen at \(ctlDir)/ctl") {
                        guard vdeSwitch.isRunning else {
                            throw AcceptanceFailure("vde_switch exited: \(vdeSwitch.logTail())")
                        }
                        return TempDir.exists(ctlDir + "/ctl") && TempDir.exists(management)
                    }
                    try await SupervisorFixture.with { supervisor in
                        try await NetNS.with(count: 2) { namespaces in
                            let client = supervisor.client
                            let socket = supervisor.statusControlSocket
                            let network = IDs.dockerID()
                            try await StatusLab.createNetwork(
                                client, network, pool: "10.205.5.0/24", gateway: "10.205.5.1/24",
                                options: ["socket_dir": ctlDir, "management_socket": management])
                            try await StatusLab.withEndpoints(
                                client, network: network, [("10.205.5.10/24", namespaces[0])]
                            ) { endpoints in
                                try await Self.checkExternal(
                                    network: network, endpoint: endpoints[0], other: namespaces[1],
                                    ctlDir: ctlDir, management: management, switchPID: vdeSwitch.pid,
                                    dir: dir, socket: socket)
                            }
                            try await StatusLab.deleteNetwork(client, network)
                        }
                    }
                    #expect(vdeSwitch.isRunning, "the plugin stopped a switch it did not start")
                }
                // Nothing of the test's may outlive it, whatever happened above.
                let left = await StatusHost.killVDEProcesses(mentioning: dir)
                #expect(left.isEmpty, "left running: \(left)")
                try switchRun.outcome.get()
                #expect(
                    switchRun.stopSteps == ["close stdin"],
                    "the test's vde_switch did not exit on EOF: \(switchRun.stopSteps)")
            }
        }

        /// Without a supervisor behind the socket, status exits 2 and names the socket.
        @Test func unreachableSupervisorExitsTwoNamingTheSocket() async throws {
            try await TempDir.with("stu") { dir in
                let missing = dir + "/nothing-here.sock"
                for arguments in [[], ["--json"]] {
                    let run = try await StatusCLI.run(arguments, socket: missing)
                    #expect(run.exitCode == 2, "no socket at all must exit 2: \(run)")
                    #expect(run.stderr.contains(missing), "the message should name the socket \(missing): \(run)")
                    #expect(run.stdout.isEmpty, "nothing on stdout when the supervisor is unreachable: \(run)")
                    #expect(run.elapsed < .seconds(10), "status took \(run.elapsed) to give up on a missing socket")
                }

                let stale = dir + "/stale.sock"
                try StatusHost.makeStaleSocket(stale)
                try #require(
                    TempDir.sockets(under: dir) == [stale],
                    "the stale socket file should exist: \(TempDir.sockets(under: dir))")
                try #require(!UnixHTTPClient.answers(socket: stale), "nothing may answer on the stale socket")
                for arguments in [[], ["--json"]] {
                    let run = try await StatusCLI.run(arguments, socket: stale)
                    #expect(run.exitCode == 2, "a stale socket must exit 2: \(run)")
                    #expect(run.stderr.contains(stale), "the message should name the socket \(stale): \(run)")
                    #expect(run.stdout.isEmpty, "nothing on stdout when the supervisor is unreachable: \(run)")
                    #expect(run.elapsed < .seconds(10), "status took \(run.elapsed) to give up on a stale socket")
                }
            }
        }

        /// The schema walker itself: a report that follows docs/status.md passes, and each kind
        /// of departure is caught (so that a passing check above means something).
        @Test func schemaCheckCatchesViolations() throws {
            let good = #"""
                {"schemaVersion":1,"healthy":true,
                 "supervisor":{"pid":1,"pluginSocket":"/s","stateDir":"/d","uptimeSeconds":0,"statusLine":"ok"},
                 "networks":[{"id":"a","shortID":"a","subnets":["10.0.0.0/24"],"gateways":[],"healthy":true,
                   "switch":{"ctlDir":"/c","ownership":"own","numPorts":32},
                   "worker":{"state":"running","restarts":0},
                   "endpoints":[{"id":"e","shortID":"e","tap":"t","macAddress":"m","state":"plugged",
                                 "counters":{"inPackets":1,"inBytes":2,"outPackets":3,"outBytes":4}}],
                   "otherPorts":[{"port":3,"counters":{"inPackets":1,"inBytes":2,"outPackets":3,"outBytes":4}}]}]}
                """#
            func violations(_ text: String) throws -> [String] {
                StatusSchema.report.violations(
                    of: try JSONDecoder().decode(StatusJSONValue.self, from: Data(text.utf8)))
            }
            #expect(try violations(good) == [])
            let broken: [(String, String, String)] = [
                (#""schemaVersion":1"#, #""schemaVersion":2"#, "$.schemaVersion"),
                (#""healthy":true,"#, #""healthy":1,"#, "$.healthy"),
                (#""pid":1,"#, "", "$.supervisor.pid: required field missing"),
                (#""ownership":"own""#, #""ownership":"mine""#, "$.networks[0].switch.ownership"),
                (#""state":"running""#, #""state":"up""#, "$.networks[0].worker.state"),
                (
                    #""state":"plugged""#, #""state":"plugged","plugPID":null"#,
                    "$.networks[0].endpoints[0].plugPID: null"
                ),
                (#""restarts":0"#, #""restarts":"0""#, "$.networks[0].worker.restarts"),
                (#""port":3"#, #""port":3,"color":"red""#, "$.networks[0].otherPorts[0].color: field not documented"),
                (#""outBytes":4}}]"#, #""outBytes":4.5}}]"#, "$.networks[0].otherPorts[0].counters.outBytes"),
            ]
            for (from, to, expected) in broken {
                let text = good.replacingOccurrences(of: from, with: to)
                try #require(text != good, "test data: \(from) not found")
                let found = try violations(text)
                #expect(
                    found.contains { $0.hasPrefix(expected) },
                    "\(from) -> \(to): expected a violation at \(expected), got \(found)")
            }
        }

        // MARK: - Checks

        /// Polls `status --json` (schema-checked) until it exits 0; fails with the last run.
        static func healthyStatus(socket: String, deadline: Duration = .seconds(10)) async throws -> (
            run: StatusRun, report: StatusDoc
        ) {
            var last: (run: StatusRun, report: StatusDoc)?
            do {
                return try await Poll.value(
                    "status to report all healthy (exit 0)", deadline: deadline, every: .milliseconds(200)
                ) {
                    let sample = try await StatusCLI.checkedJSON(socket: socket)
                    last = sample
                    return sample.run.exitCode == 0 ? sample : nil
                }
            } catch {
                throw AcceptanceFailure("\(error); last status: \(last.map { "\($0.run)" } ?? "none")")
            }
        }

        /// A network with its own switch, as the fixture's supervisor runs it: facts checked against /proc.
        static func checkOwnNetwork(_ n: StatusDoc.Network, supervisor: Supervisor, subnet: String, gateway: String)
            throws
        {
            #expect(try n.shortID == NetworkID(n.id).short, "shortID \(n.shortID) of \(n.id)")
            #expect(n.subnets == [subnet], "subnets: \(n.subnets)")
            #expect(
                n.gateways.count == 1 && n.gateways.allSatisfy { $0 == gateway || $0.hasPrefix(gateway + "/") },
                "gateways: \(n.gateways)")
            #expect(n.healthy)
            #expect(try n.switch.ctlDir == supervisor.switchDir(network: n.id), "ctlDir \(n.switch.ctlDir)")
            #expect(n.switch.ownership == "own")
            #expect(n.switch.numPorts > 0)
            // The plugin's own switch has a management socket: the counters come from it.
            let management = try #require(
                n.switch.managementSocket, "an own switch has a management socket: \(n.switch)")
            #expect(
                TempDir.sockets(under: supervisor.runDir).contains(management),
                "the management socket \(management) does not exist")
            let switchPID = try #require(n.switch.pid, "an own switch must have a pid: \(n.switch)")
            let switchArgv = StatusHost.argv(of: switchPID) ?? []
            #expect(
                StatusHost.program(switchArgv) == "vde_switch" && StatusHost.has(switchArgv, "-s", n.switch.ctlDir),
                "switch pid \(switchPID) is not a vde_switch at \(n.switch.ctlDir): \(switchArgv)")
            #expect(n.worker.state == "running")
            #expect(n.worker.restarts == 0)
            #expect(n.worker.lastError == nil, "a fresh worker has no last error: \(n.worker)")
            #expect((n.worker.uptimeSeconds ?? -1) >= 0, "a running worker has an uptime: \(n.worker)")
            let workerPID = try #require(n.worker.pid, "a running worker must have a pid: \(n.worker)")
            let workerArgv = StatusHost.argv(of: workerPID) ?? []
            #expect(
                StatusHost.program(workerArgv) == "vde-networker" && StatusHost.has(workerArgv, "--network-id", n.id),
                "worker pid \(workerPID) is not `vde-networker --network-id \(n.id)`: \(workerArgv)")
        }

        /// A joined endpoint as it should be: facts as created, plugged by a live vde_plug2tap on a port.
        static func checkPluggedEndpoint(_ e: StatusDoc.Endpoint, expected: StatusEndpoint, network: StatusDoc.Network)
            throws
        {
            #expect(try e.shortID == EndpointID(expected.id).short)
            #expect(e.tap == expected.tap, "tap \(e.tap), Join said \(expected.tap)")
            #expect(
                e.macAddress.lowercased() == expected.mac.lowercased(),
                "MAC \(e.macAddress), CreateEndpoint said \(expected.mac)")
            #expect(
                e.ipv4.map { $0 == expected.address || $0 == expected.ip } == true,
                "ipv4 \(e.ipv4 ?? "absent"), expected \(expected.address)")
            #expect(e.ipv6 == nil, "no IPv6 was given: \(e.ipv6 ?? "")")
            #expect(
                e.sandbox == expected.namespace.path,
                "sandbox \(e.sandbox ?? "absent"), expected \(expected.namespace.path)")
            #expect(e.state == "plugged", "endpoint \(expected.tap) is \(e.state)")
            let port = try #require(e.switchPort, "a plugged endpoint has a switch port")
            #expect(port >= 1 && port <= network.switch.numPorts, "switch port \(port) of \(network.switch.numPorts)")
            #expect(e.counters != nil, "a plugged endpoint has counters")
            let plug = try #require(e.plugPID, "a plugged endpoint has a plug pid")
            let argv = StatusHost.argv(of: plug) ?? []
            #expect(
                StatusHost.program(argv) == "vde_plug2tap" && StatusHost.has(argv, "-s", network.switch.ctlDir),
                "plug pid \(plug) is not a vde_plug2tap on \(network.switch.ctlDir): \(argv)")
        }

        /// The counters of each endpoint, in order; fails when one has none.
        static func counters(_ report: StatusDoc, network: String, endpoints: [StatusEndpoint]) throws -> [StatusDoc
            .Counters]
        {
            let n = try #require(report.network(network))
            return try endpoints.map { expected in
                let e = try #require(n.endpoint(expected.id))
                return try #require(e.counters, "endpoint \(expected.tap) has no counters (state \(e.state))")
            }
        }

        /// The external-switch checks, with the test's own plug attached to the switch from the other namespace.
        static func checkExternal(
            network: String, endpoint: StatusEndpoint, other: NetNS, ctlDir: String, management: String,
            switchPID: Int32, dir: String, socket: String
        ) async throws {
            let prefix = try NetworkID(network).short
            let before = try await healthyStatus(socket: socket)
            let n = try #require(before.report.network(network))
            #expect(n.switch.ownership == "external")
            #expect(n.switch.ctlDir == ctlDir)
            #expect(n.switch.managementSocket == management)
            #expect(
                n.switch.pid == nil || n.switch.pid == switchPID,
                "switch pid \(n.switch.pid.map(String.init) ?? "-") is not the test's vde_switch \(switchPID)")
            #expect(n.worker.state == "running")
            let e = try #require(n.endpoint(endpoint.id))
            try checkPluggedEndpoint(e, expected: endpoint, network: n)
            #expect(n.otherPorts.isEmpty, "only our plug is on the switch yet: \(n.otherPorts)")

            // The test's own plug, inside the other namespace (nsenter execs: the pid is the plug's).
            let tap = "vdeaccx" + IDs.tag(6)
            let plugRun = try await Background.with(
                ["/usr/bin/nsenter", "--net=\(other.path)", "/usr/bin/vde_plug2tap", "-s", ctlDir, tap],
                logPath: dir + "/plug.log", stop: .terminate
            ) { plug in
                try await Poll.until("the test's vde_plug2tap to make \(tap) in \(other.name)") {
                    guard plug.isRunning else { throw AcceptanceFailure("vde_plug2tap exited: \(plug.logTail())") }
                    return try await other.linkExists(tap)
                }
                try await other.ip("addr", "add", "10.205.5.50/24", "dev", tap)
                try await other.ip("link", "set", "dev", tap, "up")
                let ping = try await endpoint.namespace.ping("10.205.5.50")
                #expect(ping.succeeded, "endpoint -> the test's plug across the external switch: \(ping)")

                var last: (run: StatusRun, report: StatusDoc)?
                do {
                    try await Poll.until(
                        "status \(prefix) to list the test's plug (pid \(plug.pid)) under otherPorts",
                        deadline: .seconds(10), every: .milliseconds(200)
                    ) {
                        let sample = try await StatusCLI.checkedJSON([prefix], socket: socket)
                        last = sample
                        return sample.report.network(network)?.otherPorts.contains {
                            $0.peer?.contains("pid=\(plug.pid)") == true
                        } == true
                    }
                } catch {
                    throw AcceptanceFailure("\(error); last status: \(last.map { "\($0.run)" } ?? "none")")
                }
                let seen = try #require(last)
                #expect(seen.run.exitCode == 0, "another plug on the switch is not a degradation: \(seen.run)")
                let now = try #require(seen.report.network(network))
                #expect(now.otherPorts.count == 1, "exactly the test's plug is another port: \(now.otherPorts)")
                let otherPort = try #require(now.otherPorts.first { $0.peer?.contains("pid=\(plug.pid)") == true })
                let mine = try #require(now.endpoint(endpoint.id))
                #expect(otherPort.port != mine.switchPort, "the other port \(otherPort.port) is the endpoint's own")
                #expect(otherPort.peer?.contains("vde_plug2tap") == true, "peer: \(otherPort.peer ?? "absent")")
                #expect(
                    otherPort.counters.inPackets >= 3 && otherPort.counters.outPackets >= 3,
                    "the test's plug answered 3 pings: \(otherPort.counters)")
                let counters = try #require(
                    mine.counters, "the endpoint on an external switch with a management socket has counters")
                #expect(
                    counters.inPackets >= 3 && counters.outPackets >= 3,
                    "the endpoint sent and received 3 pings: \(counters)")

                let table = try await StatusCLI.run([prefix], socket: socket)
                #expect(table.exitCode == 0, "\(table)")
                #expect(otherPort.pid == plug.pid && otherPort.program == "vde_plug2tap", "\(otherPort)")
                for needle in ["external", ctlDir, "EXTERNAL PORT", "vde_plug2tap", "pid=\(plug.pid)", endpoint.tap] {
                    #expect(table.stdout.contains(needle), "status \(prefix) lacks \(needle):\n\(table.stdout)")
                }
                #expect(
                    table.stdout.contains("SENT PKTS/BYTES"),
                    "status \(prefix) should show the endpoint's counters:\n\(table.stdout)")
            }
            try plugRun.outcome.get()
        }
    }

    /// External ports and names under the real dockerd: a `vde_plug2tap` started by hand in a
    /// namespace on a `socket_dir` network (how a VM attaches) shows with its program, pid and
    /// MAC; `status NAME` finds the network by Docker's name; a kill -9 of the switch names the
    /// lost plug in status and in the log.
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct StatusDockerTests {
        @Test func externalPlugIsListedByNameAndReportedLostWithItsSwitch() async throws {
            try await Docker.checkEnvironment()
            try await SupervisorFixture.with(socket: SupervisorFixture.realSocket) { supervisor in
                await Docker.removeLabelledLeftovers()
                try await DockerScope.with { scope in
                    try await TempDir.with("st") { dir in
                        try await NetNS.with(count: 2) { namespaces in
                            try await Self.run(supervisor: supervisor, scope: scope, dir: dir, namespaces: namespaces)
                        }
                    }
                }
            }
        }

        static func run(supervisor: Supervisor, scope: DockerScope, dir: String, namespaces: [NetNS]) async throws {
            let ns = namespaces[0]
            let socket = supervisor.statusControlSocket
            let socketDir = dir + "/sw"
            let networkName = scope.name("st")
            // Without management_socket, a socket_dir switch has no -M: nothing to ask about ports.
            let networkID = try await scope.network(
                "st",
                [
                    "--subnet", "10.77.21.0/24", "-o", "socket_dir=\(socketDir)", "-o", "create_sockets=true", "-o",
                    "management_socket=\(dir)/m/sw.mgmt",
                ])
            let web = try await scope.container("web", network: "st", ip: "10.77.21.10")
            let tap = "vxtap" + IDs.tag(6)
            func randomMAC() -> String {
                "02:5a:" + (0..<4).map { _ in String(format: "%02x", Int.random(in: 0...255)) }.joined(separator: ":")
            }
            let mac = randomMAC()
            let plugArgv = [NetNS.ip, "netns", "exec", ns.name, "/usr/bin/vde_plug2tap", "-s", socketDir, tap]
            try await Background.with(plugArgv, logPath: dir + "/plug.log") { plug in
                try await Poll.until("vde_plug2tap to make \(tap) in \(ns.name)") {
                    guard plug.isRunning else { throw AcceptanceFailure("vde_plug2tap exited: \(plug.logTail())") }
                    return try await ns.linkExists(tap)
                }
                try await ns.ip("link", "set", "dev", tap, "address", mac)
                try await ns.ip("addr", "add", "10.77.21.50/24", "dev", tap)
                try await ns.ip("link", "set", "dev", tap, "up")
                let out = try await ns.ping("10.77.21.10")
                #expect(out.succeeded, "external plug -> container: \(out)")

                // The plug's port: program, pid (ip netns exec execs the plug: same pid) and MAC.
                var network: StatusDoc.Network?
                var last: StatusRun?
                do {
                    try await Poll.until("status to show the external plug with its MAC") {
                        let (run, report) = try await StatusCLI.checkedJSON(socket: socket)
                        last = run
                        network = report.network(networkID)
                        return network?.otherPorts.contains {
                            $0.pid == plug.pid && $0.macAddresses?.contains(mac) == true
                        } ?? false
                    }
                } catch {
                    throw AcceptanceFailure(
                        "\(error); plug pid \(plug.pid), MAC \(mac); last status: \(last.map(\.description) ?? "none")")
                }
                let shown = try #require(network)
                #expect(shown.name == networkName, "Docker's network name: \(String(describing: shown.name))")
                #expect(
                    shown.endpoint(web.endpointID)?.container == scope.name("web"),
                    "the container's name: \(shown.endpoints)")
                let port = try #require(shown.otherPorts.first { $0.pid == plug.pid })
                #expect(port.program == "vde_plug2tap", "\(port)")
                #expect(port.counters.inPackets > 0, "the plug's pings count as sent: \(port.counters)")
                #expect(
                    !shown.endpoints.contains { $0.switchPort == port.port },
                    "the container's port is not external: \(shown.endpoints)")

                // `status NAME`: that network, in the table, with its external port.
                let table = try await StatusCLI.run([networkName], socket: socket)
                #expect(table.exitCode == 0, "\(table)")
                for needle in [networkName, scope.name("web"), "vde_plug2tap", String(plug.pid), mac, shown.shortID] {
                    #expect(table.stdout.contains(needle), "status \(networkName) lacks \(needle):\n\(table.stdout)")
                }
                let byName = try await StatusCLI.checkedJSON([networkName], socket: socket)
                #expect(byName.report.networks.map(\.id) == [networkID], "\(byName.run)")
                let byContainer = try await StatusCLI.checkedJSON([scope.name("web")], socket: socket)
                #expect(byContainer.report.networks.map(\.id) == [networkID], "\(byContainer.run)")

                // A second plug comes, and sends, while nobody asks for status: the worker learns of
                // it from the switch's notifications alone (port/ep/+, port/descr, hash/+).
                let ns2 = namespaces[1]
                let tap2 = "vxtap" + IDs.tag(6)
                let mac2 = randomMAC()
                let plug2Argv = [NetNS.ip, "netns", "exec", ns2.name, "/usr/bin/vde_plug2tap", "-s", socketDir, tap2]
                try await Background.with(plug2Argv, logPath: dir + "/plug2.log") { plug2 in
                    try await Poll.until("vde_plug2tap to make \(tap2) in \(ns2.name)") {
                        guard plug2.isRunning else {
                            throw AcceptanceFailure("vde_plug2tap exited: \(plug2.logTail())")
                        }
                        return try await ns2.linkExists(tap2)
                    }
                    try await ns2.ip("link", "set", "dev", tap2, "address", mac2)
                    try await ns2.ip("addr", "add", "10.77.21.51/24", "dev", tap2)
                    try await ns2.ip("link", "set", "dev", tap2, "up")
                    let out2 = try await ns2.ping("10.77.21.10")
                    #expect(out2.succeeded, "second plug -> container: \(out2)")

                    // kill -9 of the switch: both plugs go with it and are named as lost.
                    let switchPID = try #require(shown.switch.pid, "no switch pid: \(shown.switch)")
                    #expect(kill(switchPID, SIGKILL) == 0)
                    var lost: StatusDoc.LostPorts?
                    try await Poll.until("status to name the lost external ports", deadline: .seconds(20)) {
                        let (_, report) = try await StatusCLI.checkedJSON(socket: socket)
                        lost = report.network(networkID)?.lostPorts?.last
                        return lost != nil
                    }
                    let loss = try #require(lost)
                    #expect(loss.switchPID == switchPID)
                    #expect(!loss.detail.isEmpty, "how the switch ended")
                    let byPID = Dictionary(
                        loss.ports.compactMap { p in p.pid.map { ($0, p) } }, uniquingKeysWith: { a, _ in a })
                    #expect(
                        Set(byPID.keys) == [plug.pid, plug2.pid] && loss.ports.count == 2,
                        "exactly the two hand-started plugs were external: \(loss.ports)")
                    #expect(byPID[plug.pid]?.program == "vde_plug2tap")
                    #expect(byPID[plug.pid]?.macAddresses == [mac])
                    #expect(byPID[plug2.pid]?.program == "vde_plug2tap", "learnt from notifications: \(loss.ports)")
                    #expect(byPID[plug2.pid]?.macAddresses == [mac2], "learnt from hash/+: \(loss.ports)")
                    let after = try await StatusCLI.run([networkName], socket: socket)
                    #expect(
                        after.stdout.contains("LOST PORT") && after.stdout.contains(String(plug.pid))
                            && after.stdout.contains(String(plug2.pid)),
                        "the table should show the lost ports:\n\(after.stdout)")
                    try await Poll.until("the log to name the lost ports") {
                        let log = TempDir.readText(supervisor.logPath) ?? ""
                        return log.contains("external port lost") && log.contains("pid \(plug.pid)")
                            && log.contains("pid \(plug2.pid)")
                    }
                    // The container is re-plugged into the new switch; the plugs are gone for good.
                    try await Poll.until("the container to be plugged again", deadline: .seconds(20)) {
                        let (_, report) = try await StatusCLI.checkedJSON(socket: socket)
                        return report.network(networkID)?.endpoint(web.endpointID)?.state == "plugged"
                    }
                    try await Poll.until("the hand-started plugs to exit with their switch") {
                        !plug.isRunning && !plug2.isRunning
                    }
                }.outcome.get()
            }.outcome.get()
            try await scope.removeContainer("web")
            try await scope.removeNetwork("st")
        }
    }
}
