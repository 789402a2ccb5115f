import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// Two "hosts" on this machine, each a worker with its own network, joined by their uplinks
/// (`vde_plug vde://CTLDIR vxvde://GROUP/if=...`) over a veth pair of the test's own, so that no
/// frame leaves the machine: both ends stay in this namespace (multicast loops back to the
/// local listeners), each uplink pinned to one end with ttl 1 (vdeplug4's default).
final class UplinkLab: @unchecked Sendable {
    let scratch: Scratch
    /// `vxuA<id>` and `vxuB<id>`, 169.254.16.1/24 and .2/24.
    let veths: (String, String)
    /// 239.255.16.N, N from the scratch id (this helper's groups are 239.255.16.0/24).
    let group: String
    /// The interface of the default route: no frame of the test may go out there.
    let outside: String?

    init(_ scratch: Scratch) throws {
        self.scratch = scratch
        veths = ("vxuA" + scratch.id, "vxuB" + scratch.id)
        group = "239.255.16.\(Int(scratch.id.prefix(2), radix: 16).map { $0 % 200 + 20 } ?? 20)"
        outside = Host.run([Host.ip, "-o", "route", "show", "default"]).output.split(separator: " ")
            .split(separator: "dev").dropFirst().first?.first.map(String.init)
        scratch.trackTap(veths.0)
        for argv in [
            [Host.ip, "link", "add", veths.0, "type", "veth", "peer", "name", veths.1],
            [Host.ip, "link", "set", veths.0, "multicast", "on", "up"],
            [Host.ip, "link", "set", veths.1, "multicast", "on", "up"],
            [Host.ip, "addr", "add", "169.254.16.1/24", "dev", veths.0],
            [Host.ip, "addr", "add", "169.254.16.2/24", "dev", veths.1],
        ] {
            let result = Host.run(argv)
            guard result.status == 0 else {
                throw HarnessError("\(argv.joined(separator: " ")): \(result.output)")
            }
        }
    }

    func url(_ end: String) throws -> UplinkURL { try UplinkURL("vxvde://\(group)/if=\(end)") }

    func txPackets(_ interface: String) -> Int {
        Int(FileRead.text("/sys/class/net/\(interface)/statistics/tx_packets")?.split(separator: "\n").first ?? "") ?? 0
    }
}

/// Counts the frames on an interface (both directions) that carry the test's multicast group
/// or come from its underlay addresses: an AF_PACKET socket in a python3 child, which prints
/// its count when stopped.
final class LeakWatch: @unchecked Sendable {
    let pid: pid_t
    let outputPath: String

    static let script = """
        import signal, socket, struct, sys
        iface, group = sys.argv[1], socket.inet_aton(sys.argv[2])
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        s.bind((iface, 0))
        count = 0
        def done(*_):
            print(count, flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, done)
        print("ready", flush=True)
        while True:
            frame = s.recv(65535)
            ip = frame[14:34]
            if len(ip) == 20 and (ip[16:20] == group or ip[12:15] == bytes([169, 254, 16])):
                count += 1
        """

    init(_ scratch: Scratch, interface: String, group: String) throws {
        outputPath = scratch.directory + "/leak-\(interface).txt"
        let output = open(outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { close(output) }
        guard let pid = Host.spawn(["/usr/bin/python3", "-c", Self.script, interface, group], stdout: output) else {
            throw HarnessError("cannot run /usr/bin/python3")
        }
        self.pid = pid
        scratch.trackProcess(pid)
    }

    var ready: Bool { FileRead.text(outputPath)?.hasPrefix("ready") == true }

    /// Stops it and returns the frames it saw (nil: it printed nothing).
    func stop() async -> Int? {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        let deadline = ContinuousClock.now + .seconds(5)
        while waitpid(pid, &status, WNOHANG) == 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return (FileRead.text(outputPath) ?? "").split(separator: "\n").dropFirst().first.flatMap { Int($0) }
    }
}

extension WorkerProcessTests {
    func fullStatus(_ worker: WorkerHarness) async throws -> WorkerStatus {
        let reply = try await worker.request(.status)
        guard case .status(let report)? = reply.reply else {
            throw HarnessError("status: \(reply.error?.message ?? "no report")")
        }
        return report
    }

    /// One simulated host: a worker whose network has `url` as its uplink, and one container
    /// (a namespace) on it at `address`.
    func uplinkHost(_ scratch: Scratch, _ name: String, url: UplinkURL, address: String) async throws
        -> (WorkerHarness, SwitchSpec, EndpointSpec, String)
    {
        let worker = try WorkerHarness(
            runDir: scratch.directory + "/run", logPath: scratch.directory + "/worker-\(name).log")
        scratch.trackProcess(worker.pid)
        var spec = try ownSpec(scratch, worker)
        spec.uplink = url
        spec.mtu = url.defaultMTU
        _ = try await start(worker, spec)
        var container = endpoint(scratch, name)
        container.ipv4Address = try IPv4Address(address)
        _ = try await add(worker, container)
        let namespace = scratch.namespace(name)
        moveIntoNamespace(tap: container.tapName, namespace: namespace, address: address + "/24")
        container.sandboxKey = try SandboxKey("/run/netns/" + namespace)
        let joined = try await worker.request(
            .joinEndpoint(endpointID: container.endpointID, sandboxKey: try #require(container.sandboxKey)))
        #expect(joined.ok == true, "join: \(joined.error?.message ?? "")")
        return (worker, spec, container, namespace)
    }

    /// CLOCK_REALTIME seconds, as the prober writes them.
    func wallClock() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// From a prober's output: how long after `since` the first probe sent later got its reply
    /// (nil: none did), and how many probes sent after `since` got none.
    func recovery(_ prober: Prober, since: Double) -> (seconds: Double?, lost: Int) {
        var sent: [Int: Double] = [:]
        var answered = Set<Int>()
        for line in (FileRead.text(prober.outputPath) ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let sequence = Int(fields[1]), let time = Double(fields[2]) else { continue }
            switch fields[0] {
            case "S", "E": sent[sequence] = time
            case "R": answered.insert(sequence)
            default: break
            }
        }
        let after = sent.filter { $0.value >= since }
        let back = after.filter { answered.contains($0.key) }.min { $0.value < $1.value }
        let lost = after.filter { probe in
            !answered.contains(probe.key) && (back.map { probe.value < $0.value } ?? true)
        }.count
        return (back.map { $0.value - since }, lost)
    }

    @Test func twoNetworksJoinedByTheirUplinksPingAcrossAndSurviveUplinkAndWorkerKills() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let lab = try UplinkLab(scratch)
        let watch = try lab.outside.map { try LeakWatch(scratch, interface: $0, group: lab.group) }
        if let watch { #expect(await Host.eventually { watch.ready }, "the leak watch on \(lab.outside ?? "?")") }
        let txBefore = lab.txPackets(lab.veths.0) + lab.txPackets(lab.veths.1)

        var (workerA, specA, containerA, nsA) = try await uplinkHost(
            scratch, "a", url: try lab.url(lab.veths.0), address: "10.99.16.1")
        defer { workerA.stop() }
        let (workerB, specB, _, nsB) = try await uplinkHost(
            scratch, "b", url: try lab.url(lab.veths.1), address: "10.99.16.2")
        defer { workerB.stop() }
        #expect(await Host.ping(from: nsA, to: "10.99.16.2"))
        #expect(await Host.ping(from: nsB, to: "10.99.16.1"))

        var report = try await fullStatus(workerA)
        let uplinkA = try #require(report.uplink, "worker log:\n\(workerA.logTail())")
        let uplinkPID = try #require(uplinkA.pid)
        let urlA = try lab.url(lab.veths.0)
        #expect(uplinkA.state == .running && uplinkA.restarts == 0 && uplinkA.url == urlA)
        let counters = try #require(uplinkA.counters)
        #expect(counters.inPackets > 0 && counters.outPackets > 0, "\(counters)")
        #expect(report.otherPorts == [], "the uplink's port is the worker's own: \(report.otherPorts ?? [])")
        #expect(report.externalPorts == [])
        #expect(FileRead.text(specA.paths.uplinkPIDFile)?.hasPrefix("\(uplinkPID) ") == true)
        #expect(
            ProcFS.arguments(of: uplinkPID) == [
                "/usr/bin/vde_plug", "vde://" + specA.paths.ctlDir, uplinkA.url.rawValue,
            ])

        // Kill -9 the uplink of A while B pings A every 10 ms: B's vde_plug learnt A's MAC with
        // the dead uplink's UDP port, so only A's announcement brings the pings back at once.
        let fromB = try Prober(scratch, from: nsB, to: "10.99.16.1")
        let fromA = try Prober(scratch, from: nsA, to: "10.99.16.2")
        #expect(await Host.eventually { fromB.sent >= 30 && fromA.sent >= 30 })
        var mark = workerA.messageCount
        let killedAt = wallClock()
        kill(uplinkPID, SIGKILL)
        let exited = try await workerA.event(.childExited, after: mark) { $0.child == .uplink }
        #expect(exited.pid == uplinkPID)
        let restarted = try await workerA.event(.childRestarted, after: mark) { $0.child == .uplink }
        #expect(restarted.pid != nil && restarted.pid != uplinkPID)
        let back = await Host.eventually(timeout: .seconds(10)) {
            recovery(fromB, since: killedAt).seconds != nil && recovery(fromA, since: killedAt).seconds != nil
        }
        #expect(back, "pings did not come back after the uplink's kill")
        let (bSeconds, bLost) = recovery(fromB, since: killedAt)
        let (aSeconds, aLost) = recovery(fromA, since: killedAt)
        print(
            "uplink kill -9: B -> A back after \(bSeconds.map { "\(Int($0 * 1000)) ms" } ?? "never"), \(bLost) probes lost; A -> B back after \(aSeconds.map { "\(Int($0 * 1000)) ms" } ?? "never"), \(aLost) lost (a probe every 10 ms)"
        )
        report = try await fullStatus(workerA)
        #expect(report.uplink?.state == .running && report.uplink?.restarts == 1)
        #expect(report.uplink?.pid == restarted.pid)
        #expect(report.otherPorts == [])
        let newUplinkPID = try #require(restarted.pid)

        // Kill -9 worker A: the uplink runs on, and the next worker adopts it.
        workerA.signal(SIGKILL)
        #expect(await workerA.waitForExit() == 128 + SIGKILL)
        #expect(Host.isAlive(newUplinkPID))
        let sentAtWorkerKill = fromB.sent
        let workerKilledAt = wallClock()
        let next = try WorkerHarness(
            networkID: workerA.networkID, runDir: scratch.directory + "/run",
            logPath: scratch.directory + "/worker-a2.log")
        scratch.trackProcess(next.pid)
        workerA = next
        _ = try await start(next, specA, restoring: [containerA])
        report = try await fullStatus(next)
        #expect(report.uplink?.pid == newUplinkPID, "the new worker must adopt the running uplink")
        #expect(report.uplink?.state == .running && report.uplink?.restarts == 0)
        #expect(report.uplink?.counters?.peerPID == newUplinkPID)
        #expect(report.otherPorts == [])
        #expect(await Host.eventually(timeout: .seconds(10)) { fromB.sent >= sentAtWorkerKill + 100 })
        let (_, lostOverWorkerKill) = recovery(fromB, since: workerKilledAt)
        print("worker kill -9 and adoption: \(lostOverWorkerKill) probes B -> A lost")
        #expect(lostOverWorkerKill == 0)
        let probesB = await fromB.stop()
        let probesA = await fromA.stop()
        print(
            "probes in all: B -> A \(probesB.sent) sent, \(probesB.lost.count) lost; A -> B \(probesA.sent), \(probesA.lost.count)"
        )

        // Adopted, the uplink is the new worker's: killed, it is restarted.
        mark = next.messageCount
        kill(newUplinkPID, SIGKILL)
        _ = try await next.event(.childRestarted, after: mark) { $0.child == .uplink }
        #expect(await Host.ping(from: nsB, to: "10.99.16.1"))

        // Shutdown leaves no vde_plug and no uplink.pid (shutDown checks every process on the ctl dir).
        try await shutDown(next, spec: specA)
        try await shutDown(workerB, spec: specB)
        #expect(!Host.exists(specA.paths.uplinkPIDFile) && !Host.exists(specB.paths.uplinkPIDFile))
        let uplinks = Host.processes(commandLineContaining: lab.group).filter {
            ProcFS.program(of: $0) == UplinkProcess.program
        }
        #expect(uplinks.isEmpty, "vde_plug left running: \(uplinks)")

        let txAfter = lab.txPackets(lab.veths.0) + lab.txPackets(lab.veths.1)
        print("underlay veths sent \(txAfter - txBefore) packets")
        #expect(txAfter > txBefore, "the uplinks must have used the test's veths")
        if let watch {
            let leaked = await watch.stop()
            print(
                "frames of the test's group or underlay seen on \(lab.outside ?? "?"): \(leaked.map(String.init) ?? "?")"
            )
            #expect(leaked == 0)
        }
    }

    /// An uplink pinned to an interface this namespace lacks is refused (vdeplug4 would send
    /// from the default route's interface instead): the network runs, the uplink is retried
    /// and shows why.
    @Test func anUplinkPinnedToAMissingInterfaceIsNotStarted() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        var spec = try ownSpec(scratch, worker)
        spec.uplink = try UplinkURL("vxvde://239.255.16.19/if=vxuX" + scratch.id)
        _ = try await start(worker, spec)
        let report = try await fullStatus(worker)
        #expect(report.uplink?.state == .restarting)
        #expect(report.uplink?.detail?.contains("vxuX" + scratch.id) == true, "\(report.uplink?.detail ?? "-")")
        #expect(Host.processes(commandLineContaining: "239.255.16.19/if=vxuX" + scratch.id).isEmpty)
        try await shutDown(worker, spec: spec)
    }
}
