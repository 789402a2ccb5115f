import Foundation
import Glibc
import Shared
import SystemPackage
import Testing

extension Acceptance {
    /// Packet capture (issue 14, README "Looking at the wire") with the real dockerd, the real
    /// plugin, real containers and the real `vde-supervisor capture` command: a whole segment
    /// (the switch's capture plugin) or one endpoint (AF_PACKET in its namespace), to a file or
    /// live into a pipe, read back with the real tcpdump. Traffic stays between the test's
    /// containers and namespaces (iputils ping and iperf3 from the host in their namespaces).
    ///
    /// Every capture here ends with nothing left behind: no capture in `status`, no socket in
    /// the network's captures dir, no `vdecapture` in the switch's `plugin/list`, the switch's
    /// ports as before, no capture command alive.
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct CaptureTests {
        func withDocker<T: Sendable>(_ body: (Supervisor, DockerScope) async throws -> T) async throws -> T {
            try await Docker.checkEnvironment()
            try CaptureCLI.checkRequirements()
            return try await SupervisorFixture.with(socket: SupervisorFixture.realSocket) { supervisor in
                await Docker.removeLabelledLeftovers()
                return try await DockerScope.with { scope in try await body(supervisor, scope) }
            }
        }

        /// Polls the pcap file a running capture writes (it flushes each frame) until `done`
        /// holds: the frames a test's traffic made have reached the file, so ending the capture
        /// now loses none of them.
        static func awaitFrames(_ path: String, _ what: String, _ done: @escaping (PcapFrames) -> Bool) async throws {
            var last: PcapFrames?
            do {
                try await Poll.until("\(path) to hold \(what)", deadline: .seconds(15)) {
                    guard TempDir.exists(path), let frames = try? await PcapFrames.read(path) else { return false }
                    last = frames
                    return done(frames)
                }
            } catch {
                throw AcceptanceFailure(
                    "\(path) never held \(what): \(last.map(String.init(describing:)) ?? "unreadable")")
            }
        }

        /// A capture ended by SIGINT (Ctrl-C) or by its reader: exit 0, a summary on stderr.
        static func expectCleanEnd<T>(
            _ end: CaptureEnd<T>, _ what: String, sourceLocation: SourceLocation = #_sourceLocation
        ) {
            print("measured: \(what): \(end.summary.map(String.init(describing:)) ?? "no summary")")
            #expect(
                end.exitedZero && end.summary != nil && !end.stopSteps.contains("SIGKILL"),
                "\(what) should end cleanly (exit 0, `N frames captured (M seen), D dropped` on stderr): \(end.status), stop steps \(end.stopSteps), stderr: \(end.stderr.suffix(2000))",
                sourceLocation: sourceLocation)
        }

        // MARK: - To a file: segment, endpoint, filter, several at once, status

        /// Two containers ping a third (a -> b, c -> b) while three captures run at once: the
        /// whole segment, a's endpoint, and the whole segment with the filter `icmp`, each to a
        /// file. tcpdump reads every file; the segment holds every echo request and reply of
        /// both pairs exactly once (each frame once, as it enters the switch); a's capture holds
        /// both directions of a's echoes and no unicast frame of the others; the filtered one
        /// only ICMP (the segment shows ARP was on the wire too). `status` lists the three
        /// captures (who, filter) while they run; Ctrl-C ends each cleanly and nothing is left.
        @Test func segmentEndpointAndFilteredCapturesToFilesHoldTheirFramesAndShowInStatus() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("cap") { dir in
                    let network = try await scope.network("seg", ["--subnet", "10.77.90.0/24"])
                    let a = try await scope.container("a", network: "seg", ip: "10.77.90.10")
                    let b = try await scope.container("b", network: "seg", ip: "10.77.90.11")
                    let c = try await scope.container("c", network: "seg", ip: "10.77.90.12")
                    let baseline = try await CaptureLab.traces(supervisor, network: network)
                    #expect(
                        baseline.statusCaptures == 0 && baseline.sockets.isEmpty && !baseline.pluginLoaded
                            && baseline.captureProcesses.isEmpty,
                        "no capture yet, nothing of one should exist: \(baseline)")
                    let net = scope.name("seg")
                    let (segmentFile, endpointFile, icmpFile) = (
                        dir + "/segment.pcap", dir + "/a.pcap", dir + "/icmp.pcap"
                    )
                    let pings = 5

                    let segment = try await CaptureRun.with(
                        try CaptureCLI.argv(supervisor, options: ["-w", segmentFile], [net]), log: dir + "/segment.log"
                    ) { segmentCapture in
                        try await CaptureRun.with(
                            try CaptureCLI.argv(supervisor, options: ["-w", endpointFile], [net, scope.name("a")]),
                            log: dir + "/a.log"
                        ) { endpointCapture in
                            try await CaptureRun.with(
                                try CaptureCLI.argv(supervisor, options: ["-w", icmpFile], [net, "icmp"]),
                                log: dir + "/icmp.log"
                            ) { icmpCapture in
                                let pids = [segmentCapture.pid, endpointCapture.pid, icmpCapture.pid]
                                let listed = try await CaptureLab.awaitConnected(supervisor, network: network, count: 3)
                                try await Self.checkStatus(
                                    supervisor, network: net, listed: listed, pids: pids, endpoint: a.endpointID,
                                    container: scope.name("a"))

                                let fromA = try await scope.net("a").ping(b.ipAddress, count: pings, interval: 0.1)
                                let fromC = try await scope.net("c").ping(b.ipAddress, count: pings, interval: 0.1)
                                #expect(
                                    fromA.received == pings && fromC.received == pings,
                                    "a -> b: \(fromA); c -> b: \(fromC)")
                                func holdsBoth(_ f: PcapFrames) -> Bool {
                                    f.echoReplies(from: b.ipAddress, to: a.ipAddress) >= pings
                                        && f.echoReplies(from: b.ipAddress, to: c.ipAddress) >= pings
                                }
                                try await Self.awaitFrames(segmentFile, "both pairs' echoes", holdsBoth)
                                try await Self.awaitFrames(icmpFile, "both pairs' echoes", holdsBoth)
                                try await Self.awaitFrames(endpointFile, "a's echo replies") {
                                    $0.echoReplies(from: b.ipAddress, to: a.ipAddress) >= pings
                                }
                                try await icmpCapture.interrupt()
                            }
                        }
                    }
                    // Nested: the inner captures ended (SIGINT) before the outer body returned.
                    let endpoint = try segment.outcome.get()
                    let icmp = try endpoint.outcome.get()
                    try icmp.outcome.get()
                    Self.expectCleanEnd(segment, "segment capture")
                    Self.expectCleanEnd(endpoint, "endpoint capture of a")
                    Self.expectCleanEnd(icmp, "segment capture with filter icmp")

                    let all = try await PcapFrames.read(segmentFile)
                    #expect(all.header.contains("EN10MB"), "a segment capture is Ethernet: \(all.header)")
                    for (from, to, host) in [(a.ipAddress, b.ipAddress, "a"), (c.ipAddress, b.ipAddress, "c")] {
                        #expect(
                            all.echoRequests(from: from, to: to) == pings
                                && all.echoReplies(from: to, to: from) == pings,
                            "the segment capture should hold \(host)'s \(pings) echo requests and replies, each once: \(all)"
                        )
                    }
                    #expect(!all.arp.isEmpty, "the first pings' ARP should be on the wire: \(all)")
                    #expect(
                        segment.summary?.captured == all.lines.count && segment.summary?.dropped == 0,
                        "the summary should count the frames in the file, none dropped: \(segment.summary.map(String.init(describing:)) ?? "none") vs \(all.lines.count)"
                    )

                    let ofA = try await PcapFrames.read(endpointFile)
                    #expect(
                        ofA.echoRequests(from: a.ipAddress, to: b.ipAddress) == pings
                            && ofA.echoReplies(from: b.ipAddress, to: a.ipAddress) == pings,
                        "a's capture should hold both directions of a's echoes, each once: \(ofA)")
                    #expect(
                        ofA.unicastNotOf(a.macAddress).isEmpty
                            && ofA.echoRequests(from: c.ipAddress, to: b.ipAddress) == 0,
                        "a's capture should hold only a's frames (a is \(a.macAddress)): \(ofA.unicastNotOf(a.macAddress))"
                    )

                    let onlyICMP = try await PcapFrames.read(icmpFile)
                    #expect(
                        !onlyICMP.lines.isEmpty && onlyICMP.lines.allSatisfy { $0.contains(": ICMP ") },
                        "the filter icmp should keep ICMP only: \(onlyICMP)")
                    #expect(
                        onlyICMP.echoRequests(from: a.ipAddress, to: b.ipAddress) == pings
                            && onlyICMP.echoRequests(from: c.ipAddress, to: b.ipAddress) == pings,
                        "the filter icmp should keep every echo: \(onlyICMP)")
                    if let summary = icmp.summary {
                        #expect(
                            summary.captured == onlyICMP.lines.count && summary.seen > summary.captured,
                            "the filtered capture saw more frames (ARP) than it kept: \(summary)")
                    }
                    try await CaptureLab.expectNothingLeft(supervisor, network: network, baseline: baseline)
                }
            }
        }

        /// `status` while three captures run: `--json` lists them for the network with who runs
        /// each (the capture commands' pids), a's endpoint and the filter; the table shows each.
        static func checkStatus(
            _ supervisor: Supervisor, network: String, listed: [[String: StatusJSONValue]], pids: [pid_t],
            endpoint: String, container: String
        ) async throws {
            let clients = Set(listed.compactMap { if case .int(let p)? = $0["clientPID"] { pid_t(p) } else { nil } })
            #expect(clients == Set(pids), "status should name the capture commands' pids \(pids): \(listed)")
            #expect(
                listed.contains { $0["endpoint"] == .string(endpoint) && $0["target"] == .string("endpoint") },
                "status should show the endpoint capture of \(endpoint): \(listed)")
            #expect(listed.contains { $0["filter"] == .string("icmp") }, "status should show the filter: \(listed)")
            let ids = listed.compactMap { if case .string(let id)? = $0["id"] { id } else { nil } }
            #expect(ids.count == 3, "each capture has an id: \(listed)")
            let table = try await StatusCLI.run([network], socket: supervisor.statusControlSocket)
            for id in ids { #expect(table.stdout.contains(id), "the status table should list capture \(id): \(table)") }
            for pid in pids {
                #expect(table.stdout.contains("\(pid)"), "the status table should show pid \(pid): \(table)")
            }
            #expect(table.stdout.contains("icmp"), "the status table should show the filter: \(table)")
            #expect(
                table.stdout.contains("segment") && table.stdout.contains(container),
                "the status table should show each capture's target (segment, \(container)): \(table)")
        }

        /// A filter libpcap cannot compile is refused before anything starts: libpcap's
        /// message, exit 2, no capture in status, nothing on the host.
        @Test func badFilterIsRefusedWithLibpcapsMessageAndStartsNothing() async throws {
            try await withDocker { supervisor, scope in
                let network = try await scope.network("bad", ["--subnet", "10.77.96.0/24"])
                try await scope.container("a", network: "bad", ip: "10.77.96.10")
                let baseline = try await CaptureLab.traces(supervisor, network: network)
                let refused = try await CaptureCLI.run(supervisor, [scope.name("bad"), "icmp", "and"])
                #expect(
                    refused.status == .exited(2) && refused.stderr.lowercased().contains("syntax error"),
                    "an unparsable filter should get libpcap's message and exit 2: \(refused)")
                #expect(
                    try await CaptureLab.traces(supervisor, network: network) == baseline,
                    "a refused capture should change nothing")
            }
        }

        /// A whole-segment capture of a switch vde-supervisor did not start (`socket_dir` of a
        /// switch the test runs) is refused with why and what to do instead (exit 1), and
        /// nothing is loaded into that switch; a capture of one container on it works.
        @Test func segmentCaptureOfAnExternalSwitchIsRefusedAndAnEndpointCaptureWorks() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("cext") { dir in
                    let (switchDir, management) = (dir + "/sw", dir + "/mgmt")
                    let run = try await Background.with(
                        ["/usr/bin/vde_switch", "-s", switchDir, "-M", management], logPath: dir + "/switch.log",
                        stop: .closeStdin
                    ) { vdeSwitch in
                        try await Poll.until("the test's vde_switch to listen at \(switchDir)/ctl") {
                            guard vdeSwitch.isRunning else {
                                throw AcceptanceFailure("vde_switch exited: \(vdeSwitch.logTail())")
                            }
                            return TempDir.exists(switchDir + "/ctl") && TempDir.exists(management)
                        }
                        try await scope.network("ext", ["--subnet", "10.77.97.0/24", "-o", "socket_dir=\(switchDir)"])
                        try await scope.container("a", network: "ext", ip: "10.77.97.10")
                        let b = try await scope.container("b", network: "ext", ip: "10.77.97.11")
                        let refused = try await CaptureCLI.run(
                            supervisor, options: ["-w", dir + "/x.pcap"], [scope.name("ext")])
                        #expect(
                            refused.status == .exited(1) && refused.stderr.contains("did not start")
                                && refused.stderr.contains("capture one container"),
                            "a segment capture of a switch the plugin did not start should say why and what to do: \(refused)"
                        )
                        #expect(!TempDir.exists(dir + "/x.pcap"), "a refused capture should write no file")
                        let plugins = try await managementCommand(management, "plugin/list")
                        #expect(!plugins.contains("vdecapture"), "nothing may be loaded into a switch we did not start")

                        let file = dir + "/a.pcap"
                        let end = try await CaptureRun.with(
                            try CaptureCLI.argv(
                                supervisor, options: ["-w", file, "-c", "4"], [scope.name("ext"), scope.name("a")]),
                            log: dir + "/a.log"
                        ) { capture in
                            let ping = try await scope.net("a").ping(b.ipAddress, count: 2, interval: 0.1)
                            #expect(ping.received == 2, "a -> b: \(ping)")
                            try await capture.waitForExit("-c 4")
                        }
                        try end.outcome.get()
                        Self.expectCleanEnd(end, "endpoint capture on an external switch, -c 4")
                        let frames = try await PcapFrames.read(file)
                        #expect(
                            frames.lines.count == 4 && end.summary?.captured == 4,
                            "-c 4 should write exactly 4 frames: \(frames)")
                    }
                    try run.outcome.get()
                }
            }
        }

        // MARK: - On a terminal, --duration, --snaplen

        /// With stdout a terminal (a pty the test opens) and no `-w`, the command prints one
        /// line per frame (MACs, IPs, protocol, length) and `--duration` ends it by itself with
        /// exit 0; with `--snaplen 64 -w FILE`, the file's snap length is 64 and each frame is
        /// cut to at most 64 bytes while keeping its length on the wire.
        @Test func aTerminalGetsALinePerFrameDurationEndsItAndSnaplenCutsFrames() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("ctty") { dir in
                    let network = try await scope.network("tty", ["--subnet", "10.77.93.0/24"])
                    let a = try await scope.container("a", network: "tty", ip: "10.77.93.10")
                    try await scope.container("b", network: "tty", ip: "10.77.93.11")
                    let netA = try await scope.net("a")
                    let baseline = try await CaptureLab.traces(supervisor, network: network)

                    let terminal = try PseudoTerminal()
                    let end = try await CaptureRun.with(
                        try CaptureCLI.argv(supervisor, options: ["--duration", "4s"], [scope.name("tty"), "icmp"]),
                        stdout: terminal.takeSecondary(), log: dir + "/tty.log"
                    ) { capture in
                        try await CaptureLab.awaitConnected(supervisor, network: network, count: 1)
                        let ping = try await netA.ping("10.77.93.11", count: 3, interval: 0.1)
                        #expect(ping.received == 3, "a -> b: \(ping)")
                        try await capture.waitForExit("--duration 4s")
                    }
                    try end.outcome.get()
                    Self.expectCleanEnd(end, "a capture on a terminal ended by --duration")
                    let lines = terminal.readAll().split(whereSeparator: \.isNewline).map(String.init)
                    let echoes = lines.filter {
                        $0.contains("10.77.93.10 > 10.77.93.11") && $0.lowercased().contains("icmp")
                            && $0.lowercased().contains(a.macAddress.lowercased())
                    }
                    #expect(
                        echoes.count == 3 && lines.allSatisfy { $0.lowercased().contains("icmp") },
                        "one line per matching frame, with a's MAC, both IPs and the protocol: \(lines)")

                    let file = dir + "/snap.pcap"
                    let cut = try await CaptureRun.with(
                        try CaptureCLI.argv(
                            supervisor, options: ["-w", file, "-c", "2", "--snaplen", "64"],
                            [scope.name("tty"), "icmp"]),
                        log: dir + "/snap.log"
                    ) { capture in
                        try await CaptureLab.awaitConnected(supervisor, network: network, count: 1)
                        _ = try await netA.ping("10.77.93.11", count: 1)
                        try await capture.waitForExit("-c 2")
                    }
                    try cut.outcome.get()
                    Self.expectCleanEnd(cut, "--snaplen 64 -c 2")
                    let pcap = try PcapFile(path: file)
                    #expect(pcap.snapLength == 64, "the file's snap length: \(pcap)")
                    #expect(
                        pcap.records.count == 2 && pcap.records.allSatisfy { $0.captured == 64 && $0.original == 98 },
                        "two echoes of 98 bytes on the wire, each cut to 64: \(pcap)")
                    try await CaptureLab.expectNothingLeft(supervisor, network: network, baseline: baseline)
                }
            }
        }

        // MARK: - Live into a pipe

        /// `vde-supervisor capture NET -w - | tcpdump -r - -c 10` while a pings b: tcpdump reads
        /// 10 frames and exits; the capture command then meets a closed pipe, ends by itself with
        /// exit 0 and its summary, and nothing is left behind. The two processes are joined by
        /// a pipe the test makes (no shell).
        @Test func liveCaptureIntoAReaderThatStopsAfterTenFramesEndsAndLeavesNothing() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("live") { dir in
                    let network = try await scope.network("live", ["--subnet", "10.77.91.0/24"])
                    try await scope.container("a", network: "live", ip: "10.77.91.10")
                    let b = try await scope.container("b", network: "live", ip: "10.77.91.11")
                    let baseline = try await CaptureLab.traces(supervisor, network: network)
                    let a = try await scope.net("a")
                    let ping = try await Background.with(
                        a.argv([ContainerNet.ping, "-n", "-i", "0.05", b.ipAddress]), logPath: dir + "/ping.log"
                    ) { pinger in
                        let pipe = try TestPipe()
                        let end = try await CaptureRun.with(
                            try CaptureCLI.argv(supervisor, options: ["-w", "-"], [scope.name("live")]),
                            stdout: pipe.write, log: dir + "/capture.log"
                        ) { capture in
                            guard let readEnd = pipe.takeRead() else {
                                throw AcceptanceFailure("the pipe's read end is gone")
                            }
                            let reader = try await Command.run(
                                [CaptureCLI.tcpdump, "-r", "-", "-c", "10", "-n", "-e", "-t"], stdin: readEnd)
                            try await capture.waitForExit("its reader stopped after 10 frames")
                            return reader
                        }
                        let reader = try end.outcome.get()
                        let lines = reader.stdout.split(separator: "\n")
                        #expect(
                            reader.succeeded && lines.count == 10,
                            "tcpdump -r - -c 10 should read 10 frames of the live capture: \(reader)")
                        #expect(
                            lines.contains { $0.contains("ICMP echo") },
                            "the live frames should be the pings: \(reader)")
                        #expect(end.stopSteps.isEmpty, "the capture should end by itself once its reader is gone")
                        Self.expectCleanEnd(end, "live capture after its reader left")
                        #expect(pinger.isRunning, "the ping should still run: \(pinger.logTail())")
                    }
                    try ping.outcome.get()
                    try await CaptureLab.expectNothingLeft(supervisor, network: network, baseline: baseline)
                }
            }
        }

        // MARK: - A slow reader

        /// Two captures whose reader never reads (the read end of their stdout pipe stays open
        /// and unread): one of the whole segment, one of a's endpoint. While they run the
        /// network is not stalled: iperf3 from a to b (the frames both captures must drop)
        /// completes, and then c's 200 pings to b all come back and iperf3 from c to b
        /// completes (throughput printed beside the same measurement before any capture; no
        /// timed threshold). Both captures count drops (status shows them); Ctrl-C ends the
        /// endpoint capture while its reader still sleeps, the segment capture ends when its
        /// reader finally goes away; each ends cleanly and reports its drops.
        @Test func slowReaderDoesNotStallTheNetworkAndDropsAreReported() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("slow") { dir in
                    let network = try await scope.network("slow", ["--subnet", "10.77.92.0/24"])
                    try await scope.container("a", network: "slow", ip: "10.77.92.10")
                    let b = try await scope.container("b", network: "slow", ip: "10.77.92.11")
                    try await scope.container("c", network: "slow", ip: "10.77.92.12")
                    let (netA, netB, netC) = (
                        try await scope.net("a"), try await scope.net("b"), try await scope.net("c")
                    )
                    let baseline = try await CaptureLab.traces(supervisor, network: network)
                    let before = try await IPerf.receivedBitsPerSecond(
                        server: netB, address: b.ipAddress, client: netC, seconds: 2, reverse: false, dir: dir)
                    let net = scope.name("slow")
                    let (segmentPipe, endpointPipe) = (try TestPipe(), try TestPipe())
                    let segment = try await CaptureRun.with(
                        try CaptureCLI.argv(supervisor, options: ["-w", "-"], [net]), stdout: segmentPipe.write,
                        log: dir + "/segment.log"
                    ) { segmentCapture in
                        try await CaptureRun.with(
                            try CaptureCLI.argv(supervisor, options: ["-w", "-"], [net, scope.name("a")]),
                            stdout: endpointPipe.write, log: dir + "/a.log"
                        ) { endpointCapture in
                            // Also when the test fails: a command blocked on its full pipe ends on EPIPE.
                            defer {
                                endpointPipe.closeRead()
                                segmentPipe.closeRead()
                            }
                            try await CaptureLab.awaitConnected(supervisor, network: network, count: 2)
                            let flood = try await IPerf.receivedBitsPerSecond(
                                server: netB, address: b.ipAddress, client: netA, seconds: 3, reverse: false, dir: dir)
                            #expect(flood > 0, "iperf3 a -> b should complete while both captures stall")
                            let pings = try await netC.ping(b.ipAddress, count: 200, interval: 0.01)
                            #expect(
                                pings.transmitted == 200 && pings.received == 200,
                                "c's pings to b should all come back while the captures' reader sleeps: \(pings)")
                            let during = try await IPerf.receivedBitsPerSecond(
                                server: netB, address: b.ipAddress, client: netC, seconds: 2, reverse: false, dir: dir)
                            print(
                                "measured: iperf3 c -> b \(Int(before / 1e6)) Mbit/s before any capture, \(Int(during / 1e6)) Mbit/s with two stalled captures; a -> b under capture \(Int(flood / 1e6)) Mbit/s"
                            )
                            #expect(during > 0, "iperf3 c -> b should complete while the captures stall")
                            try await Poll.until("status to count drops of both captures", deadline: .seconds(15)) {
                                let listed = try await CaptureLab.statusCaptures(supervisor, network: network)
                                return listed.count == 2
                                    && listed.allSatisfy {
                                        if case .int(let d)? = $0["dropped"] { d > 0 } else { false }
                                    }
                            }
                            // Ctrl-C while the reader still sleeps (stdout full: the command is
                            // blocked writing it) ends one; the other ends when its reader goes away
                            // at last and it meets a closed pipe.
                            try await endpointCapture.interrupt()
                            segmentPipe.closeRead()
                            try await segmentCapture.waitForExit("its reader's pipe closed")
                        }
                    }
                    let endpoint = try segment.outcome.get()
                    try endpoint.outcome.get()
                    Self.expectCleanEnd(segment, "segment capture with a reader that never read")
                    Self.expectCleanEnd(endpoint, "endpoint capture of a, Ctrl-C while its reader sleeps")
                    #expect(
                        (segment.summary?.dropped ?? 0) > 0,
                        "the segment capture should report drops: \(segment.stderr)")
                    #expect((endpoint.summary?.dropped ?? 0) > 0, "a's capture should report drops: \(endpoint.stderr)")
                    try await CaptureLab.expectNothingLeft(supervisor, network: network, baseline: baseline)
                }
            }
        }

        // MARK: - An external plug (a VM) on the segment

        /// A VM-style external plug (vde_plug2tap in a namespace of the test's, on the switch's
        /// `socket_dir`, as QEMU's `-netdev vde` attaches) pings a container: the whole-segment
        /// capture holds its echo requests (from its MAC) and the container's replies.
        @Test func externalPlugOnTheSegmentShowsUpInTheSegmentCapture() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("cx") { dir in
                    let socketDir = dir + "/sw"
                    let network = try await scope.network(
                        "vm",
                        ["--subnet", "10.77.93.0/24", "-o", "socket_dir=\(socketDir)", "-o", "create_sockets=true"])
                    let a = try await scope.container("a", network: "vm", ip: "10.77.93.10")
                    try await NetNS.with(count: 1) { namespaces in
                        let ns = namespaces[0]
                        let mac = "02:00:0a:4d:5d:32"
                        try await ns.withExternalPlug(
                            socketDir: socketDir, address: "10.77.93.50/24", mac: mac, logPath: dir + "/plug.log"
                        ) { _, _ in
                            let baseline = try await CaptureLab.traces(supervisor, network: network)
                            let file = dir + "/segment.pcap"
                            let end = try await CaptureRun.with(
                                try CaptureCLI.argv(supervisor, options: ["-w", file], [scope.name("vm")]),
                                log: dir + "/capture.log"
                            ) { capture in
                                try await CaptureLab.awaitConnected(supervisor, network: network, count: 1)
                                let ping = try await ContainerNet(namespace: ns).ping(
                                    a.ipAddress, count: 5, interval: 0.1)
                                #expect(ping.received == 5, "VM -> a: \(ping)")
                                try await Self.awaitFrames(file, "the VM's echoes") {
                                    $0.echoReplies(from: a.ipAddress, to: "10.77.93.50") >= 5
                                }
                                try await capture.interrupt()
                            }
                            try end.outcome.get()
                            Self.expectCleanEnd(end, "segment capture with a VM on the segment")
                            let frames = try await PcapFrames.read(file)
                            let fromVM = frames.lines.filter {
                                PcapFrames.source($0) == mac
                                    && $0.contains(": 10.77.93.50 > \(a.ipAddress): ICMP echo request")
                            }
                            #expect(
                                fromVM.count == 5 && frames.echoReplies(from: a.ipAddress, to: "10.77.93.50") == 5,
                                "the segment capture should hold the VM's 5 echo requests (from \(mac)) and a's replies: \(frames)"
                            )
                            try await CaptureLab.expectNothingLeft(supervisor, network: network, baseline: baseline)
                        }
                    }
                }
            }
        }

        // MARK: - Hub

        /// `-o hub=true` runs the switch as a hub (`vde_switch -x`): an endpoint capture of a
        /// third container c sees a's unicast echoes to b. On a switch (no hub) c's capture sees
        /// none of them. Absence is proven by order: after a's pings to b, a pings c once, and
        /// c's capture (one socket, frames in order) is read only once it holds that echo.
        @Test func hubLetsAThirdContainersCaptureSeeUnicastBetweenTwoOthersAndASwitchDoesNot() async throws {
            try await withDocker { supervisor, scope in
                try await TempDir.with("hub") { dir in
                    let hub = try await scope.network("hub", ["--subnet", "10.77.94.0/24", "-o", "hub=true"])
                    let plain = try await scope.network("sw", ["--subnet", "10.77.95.0/24"])
                    #expect(
                        try CaptureLab.switchArgv(supervisor, network: hub).contains("-x"),
                        "hub=true runs vde_switch -x")
                    #expect(
                        !(try CaptureLab.switchArgv(supervisor, network: plain).contains("-x")),
                        "no hub without hub=true")
                    for (index, base) in ["a", "b", "c"].enumerated() {
                        try await scope.container(base, network: "hub", ip: "10.77.94.\(10 + index)")
                        let joined = try await scope.connect(
                            base, to: "sw", driverOptions: [], ip: "10.77.95.\(10 + index)")
                        #expect(joined.succeeded, "docker network connect \(base) to sw: \(joined)")
                    }
                    let a = try await scope.net("a")
                    for (network, base, subnet, isHub) in [
                        (hub, "hub", "10.77.94", true), (plain, "sw", "10.77.95", false),
                    ] {
                        let (ipB, ipC) = ("\(subnet).11", "\(subnet).12")
                        // The switch learns every MAC first: a unicast frame is then never flooded.
                        _ = try await a.ping(ipB, count: 1)
                        _ = try await a.ping(ipC, count: 1)
                        let baseline = try await CaptureLab.traces(supervisor, network: network)
                        let file = dir + "/c-\(base).pcap"
                        let end = try await CaptureRun.with(
                            try CaptureCLI.argv(
                                supervisor, options: ["-w", file], [scope.name(base), scope.name("c"), "icmp"]),
                            log: dir + "/c-\(base).log"
                        ) { capture in
                            try await CaptureLab.awaitConnected(supervisor, network: network, count: 1)
                            let toB = try await a.ping(ipB, count: 5, interval: 0.1)
                            #expect(toB.received == 5, "a -> b on \(base): \(toB)")
                            let toC = try await a.ping(ipC, count: 1)
                            #expect(toC.received == 1, "a -> c on \(base): \(toC)")
                            try await Self.awaitFrames(file, "a's echo to c") {
                                $0.echoReplies(from: ipC, to: "\(subnet).10") >= 1
                            }
                            try await capture.interrupt()
                        }
                        try end.outcome.get()
                        Self.expectCleanEnd(end, "endpoint capture of c on \(base)")
                        let seen = try await PcapFrames.read(file)
                        let aToB = seen.echoRequests(from: "\(subnet).10", to: ipB)
                        print("measured: c's capture on \(base) saw \(aToB) of a's 5 echo requests to b")
                        if isHub {
                            #expect(aToB == 5, "on a hub c's capture should see a's 5 echo requests to b: \(seen)")
                        } else {
                            #expect(aToB == 0, "on a switch c's capture should not see a's unicast to b: \(seen)")
                        }
                        try await CaptureLab.expectNothingLeft(supervisor, network: network, baseline: baseline)
                    }
                }
            }
        }
    }
}
