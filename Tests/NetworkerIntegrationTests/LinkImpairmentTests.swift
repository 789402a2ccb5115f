import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 13 with real processes: an impaired endpoint is plugged by a wirefilter daemon that
/// delays both directions, changed live, pulled (NO-CARRIER) and plugged back, swapped for
/// vde_plug2tap when cleared, adopted by the next worker after a kill -9 with its settings,
/// and gone, files and all, after shutdown. Traffic only between namespaces made here.
extension WorkerProcessTests {
    static func delay(_ milliseconds: Int, down: Bool = false) -> LinkSettings {
        LinkSettings(impairment: LinkImpairment(delayMicroseconds: milliseconds * 1000), down: down)
    }

    /// The mean round trip of `count` pings (0.25 s apart) from `namespace`, in ms; nil when
    /// one got no reply.
    func roundTrip(from namespace: String, to address: String, count: Int = 8) -> Double? {
        let result = Host.run([
            Host.ip, "netns", "exec", namespace, "busybox", "ping", "-c", String(count), "-i", "0.25", "-W", "2",
            address,
        ])
        guard result.status == 0,
            let line = result.output.split(separator: "\n").last(where: { $0.contains("min/avg/max") }),
            let numbers = line.split(separator: "=").last?.split(separator: "/"), numbers.count >= 2
        else { return nil }
        return Double(numbers[1].split(separator: " ").first ?? "")
    }

    /// Adds `endpoint` with `link`, moves its tap into a new namespace as dockerd would and joins it.
    func addJoined(
        _ worker: WorkerHarness, _ scratch: Scratch, _ suffix: String, address: String, link: LinkSettings?
    ) async throws -> (endpoint: EndpointSpec, namespace: String, status: EndpointStatus) {
        var one = endpoint(scratch, suffix)
        one.link = link
        let added = try await add(worker, one)
        let namespace = scratch.namespace("wk" + suffix)
        moveIntoNamespace(tap: one.tapName, namespace: namespace, address: address)
        one.sandboxKey = try SandboxKey("/run/netns/" + namespace)
        let joined = try await worker.request(
            .joinEndpoint(endpointID: one.endpointID, sandboxKey: try #require(one.sandboxKey)))
        #expect(joined.ok == true)
        return (one, namespace, added)
    }

    func setLink(_ worker: WorkerHarness, _ id: EndpointID, _ link: LinkSettings) async throws
        -> (status: EndpointStatus, took: Duration)
    {
        let started = ContinuousClock.now
        let reply = try await worker.request(.setLink(endpointID: id, link: link))
        let took = ContinuousClock.now - started
        #expect(reply.ok == true, "setLink: \(reply.error?.message ?? "")\n\(worker.logTail())")
        return (try #require(reply.result?.endpoint), took)
    }

    func carrier(_ namespace: String) -> String {
        Host.run([Host.ip, "-n", namespace, "link", "show", "eth0"]).output
    }

    /// Delay 50 ms on both endpoints: 4 one-way delays, RTT about 200 ms. Measured here
    /// (debug build, 2 cores shared with other tests): 201-203 ms; the tolerance, 190 to 260
    /// ms, covers a loaded machine's scheduling without letting a missing or doubled delay pass.
    @Test func delayLiveChangeDownUpAndClearWithRealWirefilters() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)
        let a = try await addJoined(worker, scratch, "a", address: "10.99.13.1/24", link: Self.delay(50))
        let b = try await addJoined(worker, scratch, "b", address: "10.99.13.2/24", link: Self.delay(50))
        #expect(a.status.link == Self.delay(50))
        #expect(a.status.linkManagementSocket == spec.paths.linkManagementSocket(tap: a.endpoint.tapName))
        let wirefilterA = try #require(a.status.plugPID)
        #expect(ProcFS.program(of: wirefilterA) == "wirefilter")
        #expect(await Host.ping(from: a.namespace, to: "10.99.13.2"))
        let rtt = try #require(roundTrip(from: a.namespace, to: "10.99.13.2"))
        print("RTT with 50 ms on both endpoints: \(rtt) ms")
        #expect((190...260).contains(rtt), "RTT \(rtt) ms")
        // The port counters find the wirefilter's port (the switch shows its launcher's pid).
        let report = try await status(worker)
        #expect(report.endpoints?.allSatisfy { $0.counters != nil } == true, "\(report.endpoints ?? [])")

        // Live: the same wirefilter, new values.
        let live = try await setLink(worker, a.endpoint.endpointID, Self.delay(10))
        print("setLink live (management socket): \(live.took.milliseconds) ms")
        #expect(live.status.plugPID == wirefilterA && live.status.link == Self.delay(10))
        let changed = try #require(roundTrip(from: a.namespace, to: "10.99.13.2"))
        print("RTT with 10 + 50 ms: \(changed) ms")
        #expect((110...170).contains(changed), "RTT \(changed) ms")

        // Down: no plug, NO-CARRIER in the namespace, no traffic.
        let down = try await setLink(worker, a.endpoint.endpointID, Self.delay(10, down: true))
        #expect(down.status.state == .linkDown && down.status.plugPID == nil)
        #expect(await Host.eventually { !Host.isAlive(wirefilterA) })
        #expect(carrier(a.namespace).contains("NO-CARRIER"), "\(carrier(a.namespace))")
        #expect(
            Host.run([Host.ip, "netns", "exec", a.namespace, "busybox", "ping", "-c", "2", "-W", "1", "10.99.13.2"])
                .status != 0)
        #expect(!Host.exists(spec.paths.linkManagementSocket(tap: a.endpoint.tapName)))

        // Up: a wirefilter again, and traffic back within 1 s (the issue's bound).
        let upStarted = ContinuousClock.now
        let up = try await setLink(worker, a.endpoint.endpointID, Self.delay(10))
        #expect(up.status.state == .plugged && up.status.plugPID != nil)
        var answered = false
        while !answered, ContinuousClock.now - upStarted < .seconds(3) {
            answered =
                Host.run([
                    Host.ip, "netns", "exec", a.namespace, "busybox", "ping", "-c", "1", "-W", "1", "10.99.13.2",
                ]).status == 0
        }
        let backAfter = ContinuousClock.now - upStarted
        print("up: setLink \(up.took.milliseconds) ms, first echo reply after \(backAfter.milliseconds) ms")
        #expect(answered && backAfter < .seconds(1), "traffic back after \(backAfter.milliseconds) ms")
        #expect(!carrier(a.namespace).contains("NO-CARRIER"))

        // Cleared: b's wirefilter is replaced by vde_plug2tap on the same tap; probes every
        // 10 ms across the swap measure the gap.
        let wirefilterB = try #require(b.status.plugPID)
        let prober = try Prober(scratch, from: a.namespace, to: "10.99.13.2")
        #expect(await Host.eventually { prober.sent >= 30 })
        let cleared = try await setLink(worker, b.endpoint.endpointID, LinkSettings())
        let mark = prober.sent
        #expect(await Host.eventually { prober.sent >= mark + 50 })
        let probes = await prober.stop()
        print(
            "clear (wirefilter -> vde_plug2tap): setLink \(cleared.took.milliseconds) ms, \(probes.lost.count) of \(probes.sent) probes at 10 ms lost"
        )
        #expect(cleared.status.plugPID != wirefilterB && cleared.status.link == nil)
        #expect(cleared.status.linkManagementSocket == nil)
        let plainB = try #require(cleared.status.plugPID)
        #expect(ProcFS.program(of: plainB) == "vde_plug2tap")
        #expect(!Host.isAlive(wirefilterB))
        let plain = try #require(roundTrip(from: a.namespace, to: "10.99.13.2"))
        print("RTT with 10 ms on one endpoint: \(plain) ms")
        #expect((18...60).contains(plain), "RTT \(plain) ms")

        // And back: vde_plug2tap replaced by a wirefilter (1 ms, so that few frames are in
        // flight in a delay queue and the probes lost measure the swap itself).
        let second = try Prober(scratch, from: a.namespace, to: "10.99.13.2")
        #expect(await Host.eventually { second.sent >= 30 })
        let impaired = try await setLink(worker, b.endpoint.endpointID, Self.delay(1))
        let mark2 = second.sent
        #expect(await Host.eventually { second.sent >= mark2 + 50 })
        let swapped = await second.stop()
        print(
            "set (vde_plug2tap -> wirefilter): setLink \(impaired.took.milliseconds) ms, \(swapped.lost.count) of \(swapped.sent) probes at 10 ms lost"
        )
        #expect(impaired.status.plugPID != plainB && impaired.status.state == .plugged)
        #expect(ProcFS.program(of: try #require(impaired.status.plugPID)) == "wirefilter")

        try await shutDown(worker, spec: spec)
        #expect(Host.processes(commandLineContaining: spec.paths.linksDir).isEmpty)
        #expect(!Host.exists(spec.paths.linksDir))
        #expect(!Host.exists(spec.paths.networkDir))
    }

    /// A worker kill -9 leaves the wirefilter running with its settings; the next worker adopts
    /// it (same pid, its port found), gives it its settings again through its socket, and
    /// shutdown then leaves no wirefilter, socket or pid file.
    @Test func aWorkerKillKeepsTheWirefilterAndTheNextWorkerAdoptsIt() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try ownSpec(scratch, first)
        _ = try await start(first, spec)
        let a = try await addJoined(first, scratch, "a", address: "10.99.14.1/24", link: Self.delay(50))
        let b = try await addJoined(first, scratch, "b", address: "10.99.14.2/24", link: nil)
        let wirefilter = try #require(a.status.plugPID)
        #expect(await Host.ping(from: a.namespace, to: "10.99.14.2"))
        let before = try #require(roundTrip(from: a.namespace, to: "10.99.14.2", count: 4))
        print("RTT with 50 ms on one endpoint: \(before) ms")
        #expect((95...160).contains(before), "RTT \(before) ms")

        first.signal(SIGKILL)
        #expect(await first.waitForExit() == 128 + SIGKILL)
        #expect(Host.isAlive(wirefilter))
        #expect(Host.exists(spec.paths.linkManagementSocket(tap: a.endpoint.tapName)))

        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        let started = try await start(second, spec, restoring: [a.endpoint, b.endpoint])
        let adopted = try #require(started.endpoints?.first { $0.endpointID == a.endpoint.endpointID })
        #expect(adopted.state == .plugged && adopted.plugPID == wirefilter, "the wirefilter must be adopted")
        #expect(adopted.link == Self.delay(50))
        let report = try await status(second)
        let counters = report.endpoints?.first { $0.endpointID == a.endpoint.endpointID }?.counters
        #expect(counters != nil, "the adopted wirefilter's port must be found")
        let info = try await ManagementClient(
            socketPath: spec.paths.linkManagementSocket(tap: a.endpoint.tapName), console: .wirefilter
        ).run("showinfo")
        #expect(info.data.contains { $0.hasPrefix("Delay") && $0.contains("L->R 50+0U") }, "\(info.data)")
        let after = try #require(roundTrip(from: a.namespace, to: "10.99.14.2", count: 4))
        #expect((95...160).contains(after), "RTT \(after) ms")

        try await shutDown(second, spec: spec)
        #expect(await Host.eventually { !Host.isAlive(wirefilter) })
        #expect(!Host.exists(spec.paths.linksDir), "no wirefilter socket or pid file may stay")
        #expect(!Host.exists(spec.paths.networkDir))
    }

    /// A crashed wirefilter is restarted inside the container's namespace (through nsenter)
    /// with the endpoint's link; the tap watch works on a wirefilter's tun descriptor too: the
    /// tap deleted, the wirefilter (which would spin) is stopped and the endpoint is `tapGone`.
    @Test func aCrashedWirefilterIsRestartedInTheContainerAndStoppedWhenItsTapGoes() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)
        let a = try await addJoined(worker, scratch, "a", address: "10.99.15.1/24", link: Self.delay(50))
        let b = try await addJoined(worker, scratch, "b", address: "10.99.15.2/24", link: nil)
        let first = try #require(a.status.plugPID)
        #expect(await Host.ping(from: b.namespace, to: "10.99.15.1"))

        let mark = worker.messageCount
        kill(first, SIGKILL)
        let restarted = try await worker.event(.childRestarted, after: mark) { $0.endpointID == a.endpoint.endpointID }
        let second = try #require(restarted.pid)
        #expect(second != first && ProcFS.program(of: second) == "wirefilter")
        #expect(ProcFS.arguments(of: second)?.contains(spec.paths.ctlDir + ":tap://eth0") == true)
        #expect(ProcFS.networkNamespace(of: second) == FileSystem.fileID("/run/netns/" + a.namespace))
        let rtt = try #require(roundTrip(from: b.namespace, to: "10.99.15.1", count: 4))
        #expect((95...160).contains(rtt), "RTT \(rtt) ms after the restart")

        let goneMark = worker.messageCount
        // Deleted inside the namespace (a plug running there keeps the namespace itself alive).
        #expect(Host.run([Host.ip, "-n", a.namespace, "link", "del", "eth0"]).status == 0)
        let gone = try await worker.event(.tapGone, after: goneMark) { $0.endpointID == a.endpoint.endpointID }
        #expect(gone.pid == second)
        #expect(await Host.eventually { !Host.isAlive(second) })
        #expect(!Host.exists(spec.paths.linkManagementSocket(tap: a.endpoint.tapName)))
        try await shutDown(worker, spec: spec)
        #expect(!Host.exists(spec.paths.networkDir))
    }
}
