import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// Link impairment (issue 13, README "Shaping links") with the real dockerd, the real
    /// plugin, real containers, real wirefilter plugs and real traffic between the test's
    /// containers: per network (`-o link_*`), per endpoint (`--driver-opt`), live with
    /// `vde-supervisor link`, kept across a worker kill and a supervisor restart, cable pull
    /// and plug back, and bad values refused everywhere. Measurements run from the host in a
    /// container's namespace (iputils ping, iperf3; the image is busybox only).
    ///
    /// Tolerances, from measurement on this 2-core machine with other builds running:
    /// - RTT: wirefilter delays each direction of each impaired link, so two endpoints with
    ///   50 ms see 4 × 50 = 200 ms. Measured (median of 20 pings): see ``rttWindow(_:)``.
    /// - Loss: see ``lossTwentyPercentOverFiveHundredPings()``.
    /// - Rate: iperf3 within 10 % of the configured rate (the issue's tolerance).
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct LinkTests {
        func withDocker<T: Sendable>(_ body: (Supervisor, DockerScope) async throws -> T) async throws -> T {
            try await Docker.checkEnvironment()
            return try await SupervisorFixture.with(socket: SupervisorFixture.realSocket) { supervisor in
                await Docker.removeLabelledLeftovers()
                return try await DockerScope.with { scope in try await body(supervisor, scope) }
            }
        }

        /// The RTT window accepted for a configured round trip of `expected` ms (the sum of
        /// every one-way delay on the path): wirefilter's timer releases frames up to 0.6 ms
        /// early (4 × 50 ms measured at 199.4 ms minimum), and a loaded machine adds a few ms
        /// (median 203 ms measured for 200 ms, max 210 ms); 15 % + 10 ms above leaves room for
        /// the load of parallel builds, and stays far from the next step any test makes.
        static func rttWindow(_ expected: Double) -> ClosedRange<Double> {
            (expected - 5)...(expected * 1.15 + 10)
        }

        /// An unimpaired path: well under a millisecond idle; 20 ms allows for the load of
        /// other builds and stays far below any delay a test sets.
        static let unimpairedRTT = 20.0

        /// Median RTT of 20 pings (after 2 that may pay for ARP) from `from` to `address`.
        static func medianRTT(_ from: ContainerNet, _ address: String) async throws -> PingRun {
            _ = try await from.ping(address, count: 2, interval: 0.2, wait: 2)
            return try await from.ping(address, count: 20, interval: 0.05, wait: 2)
        }

        static func expectRTT(
            _ run: PingRun, about expected: Double, _ what: String,
            sourceLocation: SourceLocation = #_sourceLocation
        ) {
            let window = rttWindow(expected)
            guard let median = run.medianRTT else {
                Issue.record("\(what): no reply at all: \(run)", sourceLocation: sourceLocation)
                return
            }
            print("measured: \(what): median RTT \(String(format: "%.1f", median)) ms (expected \(expected) ms)")
            #expect(
                window.contains(median) && run.received >= 18,
                "\(what): median RTT \(median) ms, expected \(expected) ms (\(window)): \(run)",
                sourceLocation: sourceLocation)
        }

        static func expectUnimpaired(
            _ run: PingRun, _ what: String, sourceLocation: SourceLocation = #_sourceLocation
        ) {
            let median = run.medianRTT ?? .infinity
            print("measured: \(what): median RTT \(String(format: "%.2f", median)) ms (unimpaired)")
            #expect(
                median < unimpairedRTT && run.received == run.transmitted && run.transmitted > 0,
                "\(what): expected an unimpaired path (median < \(unimpairedRTT) ms, nothing lost): \(run)",
                sourceLocation: sourceLocation)
        }

        /// Traffic back within 1 s of `link ... up` returning (the issue's bound): the first
        /// reply of a ping every 10 ms, waited for up to 5 s so that a miss says by how much.
        static func expectBackWithinOneSecond(
            _ probe: (run: PingRun, elapsed: Duration), _ what: String,
            sourceLocation: SourceLocation = #_sourceLocation
        ) {
            print("measured: \(what): first reply after \(probe.elapsed) (\(probe.run.transmitted) probes)")
            #expect(
                probe.run.received >= 1 && probe.elapsed < .seconds(1),
                "\(what): traffic should be back within 1 s, first reply after \(probe.elapsed): \(probe.run)",
                sourceLocation: sourceLocation)
        }

        /// `vde-supervisor link NET CONTAINER show`.
        static func show(_ supervisor: Supervisor, _ scope: DockerScope, _ network: String, _ container: String)
            async throws -> String
        {
            try await LinkCLI.check([scope.name(network), scope.name(container), "show"], supervisor).stdout
        }

        // MARK: - Per network

        /// `-o link_delay=25ms` at create: every endpoint gets a wirefilter plug delaying each
        /// direction by 25 ms, so two containers see 100 ms. `link NET set` (no container)
        /// changes every endpoint and the default for those to come.
        @Test func networkDefaultDelaysEveryEndpoint() async throws {
            try await withDocker { supervisor, scope in
                let network = try await scope.network("nd", ["--subnet", "10.77.70.0/24", "-o", "link_delay=25ms"])
                try await scope.container("a", network: "nd", ip: "10.77.70.10")
                try await scope.container("b", network: "nd", ip: "10.77.70.11")
                let ctl = try supervisor.switchDir(network: network)
                #expect(
                    HostInspector.wirefilters(ctlDir: ctl).count == 2,
                    "each endpoint should be plugged by a wirefilter: \(HostInspector.vdeProcesses(mentioning: [ctl]))")
                #expect(HostInspector.plug2taps(ctlDir: ctl).isEmpty, "an impaired endpoint needs no vde_plug2tap")
                let a = try await scope.net("a")
                Self.expectRTT(try await Self.medianRTT(a, "10.77.70.11"), about: 100, "link_delay=25ms on the network")

                let shown = try await Self.show(supervisor, scope, "nd", "a")
                #expect(shown.contains("delay=25ms"), "link show: \(shown)")
                let table = try await StatusCLI.run([scope.name("nd")], socket: supervisor.statusControlSocket)
                #expect(table.stdout.contains("delay=25ms"), "status should show each endpoint's link: \(table)")
                let json = try await StatusCLI.checkedJSON(socket: supervisor.statusControlSocket)
                let endpoints = try #require(json.report.network(network)).endpoints
                #expect(
                    endpoints.count == 2 && endpoints.allSatisfy { $0.link?.settings["delay"] == "25ms" },
                    "status --json should carry each endpoint's link: \(json.run)")

                try await LinkCLI.check([scope.name("nd"), "set", "delay=10ms"], supervisor)
                Self.expectRTT(try await Self.medianRTT(a, "10.77.70.11"), about: 40, "after link NET set delay=10ms")
                try await scope.container("c", network: "nd", ip: "10.77.70.12")
                let shownC = try await Self.show(supervisor, scope, "nd", "c")
                #expect(shownC.contains("delay=10ms"), "a container started after `link NET set` gets it: \(shownC)")
                Self.expectRTT(try await Self.medianRTT(a, "10.77.70.12"), about: 40, "a -> a container started later")
            }
        }

        // MARK: - Per endpoint

        /// `--driver-opt link_delay=50ms` on both ends, one through `docker run --network
        /// name=...,driver-opt=...`, one through `docker network connect --driver-opt`: RTT
        /// 4 × 50 = 200 ms; the other network of the connected container stays unimpaired.
        @Test func endpointOptionsOnBothEndsGiveTwoHundredMilliseconds() async throws {
            try await withDocker { supervisor, scope in
                let network = try await scope.network("eo", ["--subnet", "10.77.71.0/24"])
                let side = try await scope.network("side", ["--subnet", "10.77.72.0/24"])
                let run = try await scope.startContainer(
                    "a", network: "eo", driverOptions: ["link_delay=50ms"], ip: "10.77.71.10")
                #expect(run.succeeded, "docker run --network name=...,driver-opt=link_delay=50ms: \(run)")
                try await scope.container("b", network: "side", ip: "10.77.72.11")
                let connect = try await scope.connect(
                    "b", to: "eo", driverOptions: ["link_delay=50ms"], ip: "10.77.71.11")
                #expect(connect.succeeded, "docker network connect --driver-opt link_delay=50ms: \(connect)")
                #expect(HostInspector.wirefilters(ctlDir: try supervisor.switchDir(network: network)).count == 2)
                #expect(
                    HostInspector.wirefilters(ctlDir: try supervisor.switchDir(network: side)).isEmpty,
                    "an unimpaired endpoint must get no wirefilter")
                let a = try await scope.net("a")
                Self.expectRTT(try await Self.medianRTT(a, "10.77.71.11"), about: 200, "link_delay=50ms on both ends")
                let shown = try await Self.show(supervisor, scope, "eo", "b")
                #expect(shown.contains("delay=50ms"), "link show: \(shown)")
            }
        }

        // MARK: - Live

        /// `link NET CONTAINER set/clear` while traffic flows: the delay follows each change,
        /// a change between two impaired settings goes to the running wirefilter (same pid: no
        /// re-plug), `clear` puts vde_plug2tap back; the container's interface (index, MAC,
        /// address) and its Docker endpoint stay throughout.
        @Test func liveSetAndClearKeepTheEndpoint() async throws {
            try await withDocker { supervisor, scope in
                let network = try await scope.network("lv", ["--subnet", "10.77.73.0/24"])
                let endpoint = try await scope.container("a", network: "lv", ip: "10.77.73.10").endpointID
                try await scope.container("b", network: "lv", ip: "10.77.73.11")
                let ctl = try supervisor.switchDir(network: network)
                let a = try await scope.net("a")
                let identity = try await a.interface().identity
                let net = scope.name("lv")
                let (ca, cb) = (scope.name("a"), scope.name("b"))
                Self.expectUnimpaired(try await Self.medianRTT(a, "10.77.73.11"), "before any setting")
                #expect(HostInspector.wirefilters(ctlDir: ctl).isEmpty)

                try await LinkCLI.check([net, ca, "set", "delay=50ms"], supervisor)
                Self.expectRTT(try await Self.medianRTT(a, "10.77.73.11"), about: 100, "set delay=50ms on a")
                let filters = HostInspector.wirefilters(ctlDir: ctl)
                #expect(filters.count == 1, "one wirefilter for a: \(filters)")

                try await LinkCLI.check([net, ca, "set", "delay=25ms"], supervisor)
                Self.expectRTT(try await Self.medianRTT(a, "10.77.73.11"), about: 50, "a's delay changed to 25ms")
                #expect(
                    HostInspector.wirefilters(ctlDir: ctl).map(\.pid) == filters.map(\.pid),
                    "a change between impaired settings should go to the running wirefilter, not replace it")

                try await LinkCLI.check([net, cb, "set", "delay=50ms"], supervisor)
                Self.expectRTT(try await Self.medianRTT(a, "10.77.73.11"), about: 150, "25ms on a, 50ms on b")

                try await LinkCLI.check([net, ca, "clear"], supervisor)
                Self.expectRTT(try await Self.medianRTT(a, "10.77.73.11"), about: 100, "a cleared, b still 50ms")
                let shownA = try await Self.show(supervisor, scope, "lv", "a")
                #expect(!shownA.contains("delay="), "a was cleared: \(shownA)")

                try await LinkCLI.check([net, "clear"], supervisor)
                Self.expectUnimpaired(try await Self.medianRTT(a, "10.77.73.11"), "after link NET clear")
                #expect(
                    HostInspector.wirefilters(ctlDir: ctl).isEmpty,
                    "cleared endpoints pay nothing: \(HostInspector.vdeProcesses(mentioning: [ctl]))")
                #expect(HostInspector.plug2taps(ctlDir: ctl).count == 2)

                let after = try await a.interface()
                #expect(after.identity == identity, "a's interface changed: \(identity) -> \(after)")
                #expect(!after.noCarrier, "a's interface lost its carrier: \(after)")
                #expect(try await scope.attachment("a", network: "lv").endpointID == endpoint)
            }
        }

        // MARK: - Kept across restarts

        /// Settings made live are the supervisor's state: a worker killed with SIGKILL is
        /// replaced and the new one adopts the running wirefilter (same pid) with its delay, and
        /// keeps a pulled cable pulled; a supervisor stopped (with its networks, `stop-networks`)
        /// and started again on the same state plugs everything back as it was.
        @Test func settingsSurviveWorkerKillAndSupervisorRestart() async throws {
            try await Docker.checkEnvironment()
            try await TempDir.with("lrs") { root in
                let scope = DockerScope()
                do {
                    let network = try await SupervisorFixture.with(
                        socket: SupervisorFixture.realSocket, directory: root
                    ) { supervisor in
                        await Docker.removeLabelledLeftovers()
                        return try await Self.setAndKillWorker(supervisor, scope)
                    }
                    try await SupervisorFixture.with(socket: SupervisorFixture.realSocket, directory: root) {
                        supervisor in
                        try await Self.checkAfterSupervisorRestart(supervisor, scope, network: network)
                        let failures = await scope.cleanup()
                        #expect(failures.isEmpty, "removing the containers and the network: \(failures)")
                    }
                } catch {
                    _ = try? await SupervisorFixture.with(socket: SupervisorFixture.realSocket, directory: root) { _ in
                        await scope.cleanup()
                    }
                    throw error
                }
            }
        }

        static func workerPID(_ network: String) -> Int32? {
            HostInspector.vdeProcesses(mentioning: ["--network-id \(network)", network]).first {
                $0.program == "vde-networker"
            }?.pid
        }

        static func setAndKillWorker(_ supervisor: Supervisor, _ scope: DockerScope) async throws -> String {
            let network = try await scope.network("kr", ["--subnet", "10.77.74.0/24"])
            try await scope.container("a", network: "kr", ip: "10.77.74.10")
            try await scope.container("b", network: "kr", ip: "10.77.74.11")
            try await scope.container("c", network: "kr", ip: "10.77.74.12")
            let net = scope.name("kr")
            try await LinkCLI.check([net, scope.name("a"), "set", "delay=50ms"], supervisor)
            try await LinkCLI.check([net, scope.name("c"), "down"], supervisor)
            let (b, c) = (try await scope.net("b"), try await scope.net("c"))
            Self.expectRTT(try await Self.medianRTT(b, "10.77.74.10"), about: 100, "before the kill")
            let ctl = try supervisor.switchDir(network: network)
            let filters = HostInspector.wirefilters(ctlDir: ctl).map(\.pid)
            #expect(filters.count == 1, "one wirefilter, a's")

            let worker = try #require(Self.workerPID(network), "no vde-networker for \(network)")
            kill(worker, SIGKILL)
            try await Poll.until("a new vde-networker for the network", deadline: .seconds(30)) {
                Self.workerPID(network).map { $0 != worker } ?? false
            }
            try await Poll.until(
                "b -> a to work after the worker kill", deadline: .seconds(30), every: .milliseconds(500)
            ) {
                try await b.ping("10.77.74.10", count: 1, wait: 1).received == 1
            }
            Self.expectRTT(try await Self.medianRTT(b, "10.77.74.10"), about: 100, "after a worker kill -9")
            #expect(
                HostInspector.wirefilters(ctlDir: ctl).map(\.pid) == filters,
                "the new worker should adopt a's running wirefilter: before \(filters), now \(HostInspector.wirefilters(ctlDir: ctl))"
            )
            let cAfter = try await c.interface()
            #expect(cAfter.noCarrier, "c's cable was pulled before the kill and should stay pulled: \(cAfter)")
            let toC = try await b.ping("10.77.74.12", count: 3, interval: 0.2, wait: 1)
            #expect(toC.received == 0, "c is down, yet answered: \(toC)")
            let aShown = try await Self.show(supervisor, scope, "kr", "a")
            #expect(aShown.contains("delay=50ms"), "link show a after the kill: \(aShown)")
            return network
        }

        static func checkAfterSupervisorRestart(_ supervisor: Supervisor, _ scope: DockerScope, network: String)
            async throws
        {
            let (b, c) = (try await scope.net("b"), try await scope.net("c"))
            try await Poll.until(
                "b -> a to work after the supervisor restart", deadline: .seconds(30), every: .milliseconds(500)
            ) {
                try await b.ping("10.77.74.10", count: 1, wait: 1).received == 1
            }
            Self.expectRTT(try await Self.medianRTT(b, "10.77.74.10"), about: 100, "after a supervisor restart")
            let cAfter = try await c.interface()
            #expect(cAfter.noCarrier, "c's cable should stay pulled across the restart: \(cAfter)")
            let shown = try await StatusCLI.run([scope.name("kr")], socket: supervisor.statusControlSocket)
            #expect(shown.stdout.contains("delay=50ms"), "status after the restart: \(shown)")
            try await LinkCLI.check([scope.name("kr"), scope.name("c"), "up"], supervisor)
            Self.expectBackWithinOneSecond(try await b.firstReply("10.77.74.12", deadline: 5), "c up after the restart")
            let json = try await StatusCLI.checkedJSON(socket: supervisor.statusControlSocket)
            let endpoints = try #require(json.report.network(network), "\(json.run)").endpoints
            #expect(
                endpoints.filter { $0.link?.settings["delay"] == "50ms" }.count == 1,
                "status --json after the restart: a keeps delay=50ms: \(json.run)")
        }

        // MARK: - Loss and rate

        /// `loss=20%` on a alone, 500 pings from b at 5 ms intervals. wirefilter drops 20 % of
        /// each direction of a's link independently, and each ping crosses that link twice
        /// (request in, reply out), so a ping comes back with probability 0.8² = 0.64: the
        /// expected loss is 36 %. Binomial over n = 500: σ = √(0.36 · 0.64 / 500) = 2.15 points;
        /// the window 26 % to 46 % is ±4.6 σ (a false failure about once in 200 000 runs), and
        /// it excludes what a wrong implementation gives: 20 % (one direction only), 59 %
        /// (applied on both links, 1 − 0.8⁴) or 0. Neighbours are pinned, so lost ARP does not
        /// count. Measured by hand with wirefilter -l 20 on one side: 32.2 % to 37.2 % in 6 runs.
        @Test func lossTwentyPercentOverFiveHundredPings() async throws {
            try await withDocker { supervisor, scope in
                try await scope.network("ls", ["--subnet", "10.77.75.0/24"])
                let ea = try await scope.container("a", network: "ls", ip: "10.77.75.10")
                let eb = try await scope.container("b", network: "ls", ip: "10.77.75.11")
                let (a, b) = (try await scope.net("a"), try await scope.net("b"))
                try await a.pinNeighbour("10.77.75.11", mac: eb.macAddress, device: "eth0")
                try await b.pinNeighbour("10.77.75.10", mac: ea.macAddress, device: "eth0")
                try await LinkCLI.check([scope.name("ls"), scope.name("a"), "set", "loss=20%"], supervisor)
                let run = try await b.ping("10.77.75.10", count: 500, interval: 0.005, wait: 1)
                print("measured: loss=20% on one endpoint, 500 pings: \(run.lossFraction * 100) % lost (expected 36 %)")
                #expect(run.transmitted == 500, "\(run)")
                #expect((0.26...0.46).contains(run.lossFraction), "expected 36 % ± 10 points: \(run)")
            }
        }

        /// `rate=10mbit` on a: iperf3 TCP into a and out of a, each within 10 % of 10 Mbit/s.
        /// wirefilter counts Ethernet frames, so TCP goodput is at most 1448/1514 of the rate
        /// (9.56 Mbit/s); measured by hand 9.49 and 9.57 Mbit/s at the receiver.
        @Test func rateTenMegabitMeasuredWithIperf3() async throws {
            try await withDocker { supervisor, scope in
                try await scope.network("rt", ["--subnet", "10.77.76.0/24"])
                try await scope.container("a", network: "rt", ip: "10.77.76.10")
                try await scope.container("b", network: "rt", ip: "10.77.76.11")
                try await LinkCLI.check([scope.name("rt"), scope.name("a"), "set", "rate=10mbit"], supervisor)
                let (a, b) = (try await scope.net("a"), try await scope.net("b"))
                try await TempDir.with("iperf") { dir in
                    for reverse in [false, true] {
                        let bits = try await IPerf.receivedBitsPerSecond(
                            server: a, address: "10.77.76.10", client: b, seconds: 5, reverse: reverse, dir: dir)
                        let direction = reverse ? "out of a" : "into a"
                        print("measured: rate=10mbit, iperf3 \(direction): \(bits / 1e6) Mbit/s")
                        #expect((9e6...11e6).contains(bits), "\(direction): \(bits / 1e6) Mbit/s, expected 10 ± 10 %")
                    }
                }
            }
        }

        // MARK: - Cable pull

        /// `down` pulls the cable: the container's interface shows NO-CARRIER (same interface,
        /// same address) and pings fail; `up` plugs it back with its impairment, and pings pass
        /// within 1 s. Neighbours are pinned so the 1 s measures the link, not ARP's retry timer.
        @Test func downPullsTheCableAndUpPlugsItBack() async throws {
            try await withDocker { supervisor, scope in
                let network = try await scope.network("du", ["--subnet", "10.77.77.0/24"])
                let ea = try await scope.container("a", network: "du", ip: "10.77.77.10")
                let eb = try await scope.container("b", network: "du", ip: "10.77.77.11")
                let (a, b) = (try await scope.net("a"), try await scope.net("b"))
                try await a.pinNeighbour("10.77.77.11", mac: eb.macAddress, device: "eth0")
                try await b.pinNeighbour("10.77.77.10", mac: ea.macAddress, device: "eth0")
                let (net, ca) = (scope.name("du"), scope.name("a"))
                let ctl = try supervisor.switchDir(network: network)
                try await LinkCLI.check([net, ca, "set", "delay=20ms"], supervisor)
                let identity = try await a.interface().identity

                try await LinkCLI.check([net, ca, "down"], supervisor)
                try await Poll.until("a's eth0 to show NO-CARRIER", deadline: .seconds(1), every: .milliseconds(50)) {
                    try await a.interface().noCarrier
                }
                let pulled = try await b.ping("10.77.77.10", count: 3, interval: 0.2, wait: 1)
                #expect(pulled.received == 0, "a is down, yet answered: \(pulled)")
                #expect(HostInspector.wirefilters(ctlDir: ctl).isEmpty, "a pulled cable has no plug")
                let shown = try await Self.show(supervisor, scope, "du", "a")
                #expect(shown.contains("down"), "link show should say down: \(shown)")
                let table = try await StatusCLI.run([net], socket: supervisor.statusControlSocket)
                #expect(table.stdout.contains("down"), "status should show the pulled cable: \(table)")
                let json = try await StatusCLI.checkedJSON(socket: supervisor.statusControlSocket)
                let shownA = try #require(json.report.network(network)?.endpoint(ea.endpointID), "\(json.run)")
                #expect(
                    shownA.state == "linkDown" && shownA.link?.down == true
                        && shownA.link?.settings["delay"] == "20ms",
                    "status --json for a pulled, delayed cable: \(json.run)")

                try await LinkCLI.check([net, ca, "up"], supervisor)
                Self.expectBackWithinOneSecond(try await b.firstReply("10.77.77.10", deadline: 5), "b -> a after up")
                let after = try await a.interface()
                #expect(!after.noCarrier && after.identity == identity, "a after up: \(identity) -> \(after)")
                Self.expectRTT(try await Self.medianRTT(b, "10.77.77.10"), about: 40, "up keeps a's delay=20ms")

                try await LinkCLI.check([net, "down"], supervisor)
                for container in [a, b] {
                    try await Poll.until("\(container.container) to show NO-CARRIER", deadline: .seconds(1)) {
                        try await container.interface().noCarrier
                    }
                }
                try await LinkCLI.check([net, "up"], supervisor)
                Self.expectBackWithinOneSecond(try await b.firstReply("10.77.77.10", deadline: 5), "after link NET up")
            }
        }

        // MARK: - Others unaffected

        /// A VM-style external plug (vde_plug2tap in a namespace of the test's, on the switch's
        /// `socket_dir`, as QEMU's `-netdev vde` attaches) and an unimpaired container on the
        /// same network do not notice another endpoint's delay, or its pulled cable.
        @Test func externalPlugIsUnaffectedByAnotherEndpointsImpairment() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("lx") { dir in
                    let socketDir = dir + "/sw"
                    try await scope.network(
                        "vm",
                        ["--subnet", "10.77.78.0/24", "-o", "socket_dir=\(socketDir)", "-o", "create_sockets=true"])
                    try await scope.container("a", network: "vm", ip: "10.77.78.10")
                    try await scope.container("b", network: "vm", ip: "10.77.78.11")
                    try await LinkCLI.check([scope.name("vm"), scope.name("a"), "set", "delay=100ms"], supervisor)
                    try await NetNS.with(count: 1) { namespaces in
                        let ns = namespaces[0]
                        try await ns.withExternalPlug(
                            socketDir: socketDir, address: "10.77.78.50/24", logPath: dir + "/plug.log"
                        ) { _, _ in
                            let vm = ContainerNet(namespace: ns)
                            Self.expectRTT(try await Self.medianRTT(vm, "10.77.78.10"), about: 200, "VM -> a (100ms)")
                            _ = try await vm.ping("10.77.78.11", count: 2, interval: 0.2)
                            let toB = try await vm.ping("10.77.78.11", count: 100, interval: 0.01)
                            Self.expectUnimpaired(toB, "VM -> unimpaired b while a is delayed")
                            try await LinkCLI.check([scope.name("vm"), scope.name("a"), "down"], supervisor)
                            let whileDown = try await vm.ping("10.77.78.11", count: 100, interval: 0.01)
                            Self.expectUnimpaired(whileDown, "VM -> b while a's cable is pulled")
                        }
                    }
                }
            }
        }

        // MARK: - The README's two-router failover

        /// README "Shaping links": two routers joined by two networks, static routes to each
        /// other's loopback address with a lower metric through `wa`; `link wa down` pulls both
        /// routers' cables on `wa` (NO-CARRIER), the kernel skips routes through a link without
        /// carrier (`ignore_routes_with_linkdown`), and the traffic takes `wb` (10 ms each way
        /// on each end: RTT 40 ms); `link wa up` brings it back to `wa`.
        @Test func twoRouterFailoverTakesTheOtherLink() async throws {
            try await withDocker { supervisor, scope in
                try await scope.network("wa", ["--subnet", "10.77.81.0/24"])
                try await scope.network("wb", ["--subnet", "10.77.82.0/24", "-o", "link_delay=10ms"])
                let router = [
                    "--cap-add", "NET_ADMIN", "--sysctl", "net.ipv4.conf.all.ignore_routes_with_linkdown=1",
                    "--sysctl", "net.ipv4.conf.default.ignore_routes_with_linkdown=1",
                ]
                for (name, n) in [("r1", 1), ("r2", 2)] {
                    let started = try await scope.startContainer(
                        name, network: "wa", ip: "10.77.81.1\(n)", extra: router)
                    guard started.succeeded else { throw AcceptanceFailure("docker run \(name): \(started)") }
                    let connected = try await scope.connect(name, to: "wb", driverOptions: [], ip: "10.77.82.1\(n)")
                    guard connected.succeeded else { throw AcceptanceFailure("connect \(name) to wb: \(connected)") }
                    let peer = 3 - n
                    for command in [
                        ["ip", "addr", "add", "10.99.\(n).\(n)/32", "dev", "lo"],
                        ["ip", "route", "add", "10.99.\(peer).\(peer)/32", "via", "10.77.81.1\(peer)", "metric", "10"],
                        ["ip", "route", "add", "10.99.\(peer).\(peer)/32", "via", "10.77.82.1\(peer)", "metric", "20"],
                    ] {
                        let done = try await scope.exec(name, command)
                        guard done.succeeded else { throw AcceptanceFailure("in \(name): \(done)") }
                    }
                }
                let r1 = try await scope.net("r1")
                func probe() async throws -> PingRun {
                    _ = try await r1.run([
                        ContainerNet.ping, "-n", "-c", "2", "-i", "0.2", "-I", "10.99.1.1", "10.99.2.2",
                    ])
                    return PingRun(
                        result: try await r1.run(
                            [
                                ContainerNet.ping, "-n", "-c", "20", "-i", "0.05", "-W", "2", "-I", "10.99.1.1",
                                "10.99.2.2",
                            ]))
                }
                Self.expectUnimpaired(try await probe(), "r1 -> r2 through wa")
                try await LinkCLI.check([scope.name("wa"), "down"], supervisor)
                try await Poll.until("r1's eth0 (on wa) to show NO-CARRIER", deadline: .seconds(1)) {
                    try await r1.interface("eth0").noCarrier
                }
                Self.expectRTT(try await probe(), about: 40, "r1 -> r2 through wb while wa is down")
                try await LinkCLI.check([scope.name("wa"), "up"], supervisor)
                try await Poll.until("r1's eth0 to have its carrier back", deadline: .seconds(1)) {
                    try await !r1.interface("eth0").noCarrier
                }
                Self.expectUnimpaired(try await probe(), "r1 -> r2 through wa again")
                // One end pulled: r1 sends through wb, r2 (carrier on wa) answers through wa.
                try await LinkCLI.check([scope.name("wa"), scope.name("r1"), "down"], supervisor)
                let oneSided = try await r1.run(
                    [ContainerNet.ping, "-n", "-c", "5", "-i", "0.2", "-W", "1", "-I", "10.99.1.1", "10.99.2.2"])
                #expect(
                    PingRun(result: oneSided).received == 0,
                    "with only r1's cable pulled, r2 answers through wa and nothing comes back: \(oneSided)")
            }
        }

        // MARK: - Bad values

        /// Negative delay, loss over 100 %, an unknown unit, an unknown key: refused with a
        /// message that names the problem at network create, at connect (and `docker run
        /// --network ...,driver-opt=`) and by the CLI; nothing changes.
        @Test func badValuesAreRefusedEverywhereAndChangeNothing() async throws {
            try await withDocker { supervisor, scope in
                let bad: [(option: String, says: String)] = [
                    ("link_delay=-5ms", "negative"), ("link_loss=101%", "above 100%"),
                    ("link_delay=5parsecs", "a duration with a unit"), ("link_bogus=1", "unknown"),
                ]
                for (index, (option, says)) in bad.enumerated() {
                    let created = try await scope.createNetwork(
                        "bad\(index)", ["--subnet", "10.77.79.0/24", "-o", option])
                    #expect(!created.succeeded, "-o \(option) was accepted: \(created)")
                    let name = option.split(separator: "=")[0]
                    #expect(
                        created.stderr.contains(name) && created.stderr.contains(says),
                        "-o \(option): the error should name \(name) and say '\(says)': \(created.stderr)")
                }
                let listed = try await Docker.check(["network", "ls", "--format", "{{.Name}}"]).stdout
                #expect(!listed.contains(scope.name("bad")), "a refused network exists: \(listed)")

                let network = try await scope.network("bv", ["--subnet", "10.77.79.0/24", "-o", "link_delay=20ms"])
                try await scope.network("bvside", ["--subnet", "10.77.80.0/24"])
                try await scope.container("a", network: "bv", ip: "10.77.79.10")
                try await scope.container("b", network: "bvside", ip: "10.77.80.11")
                let endpointBad: [(option: String, says: String)] = [
                    ("link_delay=-1ms", "negative"), ("link_loss=101%", "above 100%"),
                    ("link_rate=10parsecs", "a rate with a unit"), ("bogus=1", "unknown"),
                ]
                for (option, says) in endpointBad {
                    let connect = try await scope.connect("b", to: "bv", driverOptions: [option])
                    #expect(!connect.succeeded, "connect --driver-opt \(option) was accepted: \(connect)")
                    #expect(connect.stderr.contains(says), "connect --driver-opt \(option): \(connect.stderr)")
                }
                // dockerd 20.10 keeps a refused connect's settings in the container's config, with no
                // endpoint: attached means an endpoint ID.
                let attached = try? await scope.attachment("b", network: "bv")
                #expect(
                    attached?.endpointID ?? "" == "", "b got attached to bv anyway: \(String(describing: attached))")
                let run = try await scope.startContainer("c", network: "bv", driverOptions: ["link_loss=101%"])
                #expect(!run.succeeded, "docker run with driver-opt=link_loss=101% started: \(run)")
                #expect(run.stderr.contains("above 100%"), "\(run.stderr)")

                let ctl = try supervisor.switchDir(network: network)
                let filters = HostInspector.wirefilters(ctlDir: ctl).map(\.pid)
                let before = try await Self.show(supervisor, scope, "bv", "a")
                #expect(before.contains("delay=20ms"), "\(before)")
                let cliBad: [(args: [String], says: String)] = [
                    (["delay=-5ms"], "negative"), (["loss=101%"], "above 100%"),
                    (["delay=5parsecs"], "a duration with a unit"), (["bogus=1"], "bogus"),
                    (["delay=50ms", "bogus=1"], "bogus"),
                ]
                for (args, says) in cliBad {
                    let refused = try await LinkCLI.run([scope.name("bv"), scope.name("a"), "set"] + args, supervisor)
                    #expect(!refused.succeeded, "link set \(args) was accepted: \(refused)")
                    #expect(
                        refused.stderr.contains(says), "link set \(args): the error should say '\(says)': \(refused)")
                }
                #expect(try await Self.show(supervisor, scope, "bv", "a") == before, "a refused set changed the link")
                #expect(HostInspector.wirefilters(ctlDir: ctl).map(\.pid) == filters, "a refused set re-plugged a")
            }
        }
    }
}
