import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The capture command's end of a capture socket: connects, reads records, and ends the
/// capture as `vde-supervisor capture` does (shut down its side, drain until the end record).
final class CaptureTap {
    let socket: UnixSocket
    private var reader = CaptureRecordReader()
    private(set) var frames: [CaptureRecord] = []
    private(set) var end: (frames: UInt64, dropped: UInt64, reason: String)?

    init(path: String) throws {
        socket = try UnixSocket.connect(to: path, timeout: .seconds(2))
    }

    deinit { socket.close() }

    /// Reads what arrived until `timeout` passes or the end record came.
    func read(for timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        while end == nil, ContinuousClock.now < deadline {
            guard let chunk = try? socket.receive(maximum: 1 << 16, deadline: deadline) else { return }
            if chunk.isEmpty { return }
            try take(chunk)
        }
    }

    /// Shuts down this side and reads until the worker's end record (or its close).
    func finish(timeout: Duration = .seconds(10)) throws {
        shutdown(socket.fd, Int32(SHUT_WR))
        let deadline = ContinuousClock.now + timeout
        while end == nil, ContinuousClock.now < deadline {
            let chunk = try socket.receive(maximum: 1 << 16, deadline: deadline)
            if chunk.isEmpty { break }
            try take(chunk)
        }
    }

    private func take(_ chunk: [UInt8]) throws {
        reader.append(chunk)
        while let record = try reader.next() {
            if record.kind == .end { end = record.endCounters } else { frames.append(record) }
        }
    }
}

/// One ICMP echo as a frame shows it: request or reply, from which address, which sequence.
struct EchoFrame: Hashable {
    var isRequest: Bool
    var source: String
    var destination: String
    var sequence: UInt16

    init(isRequest: Bool, source: String, destination: String, sequence: UInt16) {
        (self.isRequest, self.source, self.destination, self.sequence) = (isRequest, source, destination, sequence)
    }

    init?(_ frame: [UInt8]) {
        // Ethernet (14) + IPv4 (IHL) + ICMP: type 8 request, 0 reply.
        guard frame.count >= 42, frame[12] == 0x08, frame[13] == 0x00, frame[23] == 1 else { return nil }
        let ihl = Int(frame[14] & 0x0f) * 4
        let icmp = 14 + ihl
        guard frame.count >= icmp + 8, frame[icmp] == 8 || frame[icmp] == 0 else { return nil }
        isRequest = frame[icmp] == 8
        source = frame[26..<30].map(String.init).joined(separator: ".")
        destination = frame[30..<34].map(String.init).joined(separator: ".")
        sequence = UInt16(frame[icmp + 6]) << 8 | UInt16(frame[icmp + 7])
    }
}

/// Captures with the real vde_switch, the capture plugin (built beside vde-networker by
/// scripts/lib.sh) and namespaces: what a segment and an endpoint capture see, a reader that
/// never reads, and that the plugin is gone after the last segment capture, even after a
/// worker was killed.
extension WorkerProcessTests {
    /// A started worker with two namespaces joined: a at 10.99.14.1, b at 10.99.14.2.
    func captureLab(_ scratch: Scratch, _ worker: WorkerHarness, count: Int = 2) async throws
        -> (spec: SwitchSpec, endpoints: [EndpointSpec], namespaces: [String])
    {
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)
        var endpoints: [EndpointSpec] = []
        var namespaces: [String] = []
        for index in 0..<count {
            let suffix = ["a", "b", "c"][index]
            let ns = scratch.namespace(suffix)
            // Only the test's own traffic: no IPv6 (router solicitations, MLD) on these links.
            Host.run([Host.ip, "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            Host.run([Host.ip, "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
            endpoints.append(
                try await joinedEndpoint(
                    scratch, worker, suffix: suffix, namespace: ns, address: "10.99.14.\(index + 1)/24"))
            namespaces.append(ns)
        }
        return (spec, endpoints, namespaces)
    }

    func startCapture(_ worker: WorkerHarness, endpoint: EndpointID? = nil) async throws -> (CaptureID, String) {
        let id = CaptureID.random()
        let reply = try await worker.request(.startCapture(capture: CaptureSpec(id: id, endpointID: endpoint)))
        #expect(reply.ok == true, "startCapture: \(reply.error?.message ?? "")\n\(worker.logTail())")
        return (id, try #require(reply.result?.captureSocket))
    }

    /// `ping -c COUNT` inside `ns` (iputils), every 0.2 s unless `pace` says otherwise; its exit
    /// status (0: at least one reply).
    @discardableResult
    func ping(_ ns: String, _ address: String, count: Int = 3, pace: [String] = ["-i", "0.2"]) -> Int32 {
        Host.run(
            [Host.ip, "netns", "exec", ns, "ping", "-n", "-q", "-c", String(count), "-W", "2"] + pace + [address]
        ).status
    }

    func pluginLoaded(_ spec: SwitchSpec) async throws -> Bool {
        let management = try #require(spec.paths.managementSocket)
        return try await CapturePlugin(management: ManagementClient(socketPath: management)).isLoaded()
    }

    @Test func segmentCaptureSeesEveryFrameOfTwoPingingNamespacesOnce() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let lab = try await captureLab(scratch, worker)
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 1) == 0, "the two namespaces reach each other")

        let (_, socket) = try await startCapture(worker)
        let tap = try CaptureTap(path: socket)
        #expect(await Host.eventually { !Host.exists(socket) }, "the socket's path goes once the command connected")
        #expect(try await pluginLoaded(lab.spec), "a segment capture loads the plugin")
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 3) == 0)
        #expect(ping(lab.namespaces[1], "10.99.14.1", count: 2) == 0)
        try tap.read(for: .milliseconds(300))
        try tap.finish()

        let echoes = tap.frames.compactMap { EchoFrame($0.payload) }
        var seen: [EchoFrame: Int] = [:]
        for echo in echoes { seen[echo, default: 0] += 1 }
        for sequence in 1...3 {
            let request = EchoFrame(
                isRequest: true, source: "10.99.14.1", destination: "10.99.14.2", sequence: UInt16(sequence))
            let reply = EchoFrame(
                isRequest: false, source: "10.99.14.2", destination: "10.99.14.1", sequence: UInt16(sequence))
            #expect(seen[request] == 1, "a's request \(sequence) exactly once: \(seen)")
            #expect(seen[reply] == 1, "b's reply \(sequence) exactly once: \(seen)")
        }
        for sequence in 1...2 {
            let request = EchoFrame(
                isRequest: true, source: "10.99.14.2", destination: "10.99.14.1", sequence: UInt16(sequence))
            #expect(seen[request] == 1, "b's request \(sequence) exactly once")
        }
        #expect(tap.frames.allSatisfy { $0.port > 0 }, "each frame carries the switch port it entered on")
        let end = try #require(tap.end, "the worker ends the capture with an end record")
        #expect(end.frames == UInt64(tap.frames.count) && end.dropped == 0 && end.reason.isEmpty)

        // The last segment capture took the plugin with it.
        #expect(await Host.eventually { (try? self.pluginLoadedNow(lab.spec)) == false }, "\(worker.logTail())")
        #expect(!Host.exists(lab.spec.paths.captureSink) && !Host.exists(socket))
        try await shutDown(worker, spec: lab.spec)
    }

    /// ``pluginLoaded(_:)`` for a synchronous condition: one blocking management exchange.
    func pluginLoadedNow(_ spec: SwitchSpec) throws -> Bool {
        let management = try #require(spec.paths.managementSocket)
        let replies = try ManagementClient.exchange(path: management, commands: ["plugin/list"], timeout: .seconds(1))
            .get()
        return replies.first?.data.contains { $0.hasPrefix(CapturePlugin.name + " ") } == true
    }

    @Test func endpointCaptureSeesBothDirectionsOfThatEndpointOnly() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let lab = try await captureLab(scratch, worker, count: 3)
        // The switch learns every MAC first, so that unicast between b and c is not flooded to a.
        #expect(ping(lab.namespaces[1], "10.99.14.3", count: 1) == 0)
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 1) == 0)

        let (_, socket) = try await startCapture(worker, endpoint: lab.endpoints[0].endpointID)
        let tap = try CaptureTap(path: socket)
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 3) == 0)
        #expect(ping(lab.namespaces[1], "10.99.14.3", count: 3) == 0)
        try tap.read(for: .milliseconds(300))
        try tap.finish()

        var seen: [EchoFrame: [Bool]] = [:]
        for frame in tap.frames {
            guard let echo = EchoFrame(frame.payload) else { continue }
            seen[echo, default: []].append(frame.isOutgoing)
        }
        for sequence in 1...3 {
            let request = EchoFrame(
                isRequest: true, source: "10.99.14.1", destination: "10.99.14.2", sequence: UInt16(sequence))
            let reply = EchoFrame(
                isRequest: false, source: "10.99.14.2", destination: "10.99.14.1", sequence: UInt16(sequence))
            #expect(seen[request] == [true], "a's request \(sequence) once, sent by a: \(seen)")
            #expect(seen[reply] == [false], "b's reply \(sequence) once, received by a: \(seen)")
        }
        #expect(
            !seen.keys.contains { $0.source == "10.99.14.3" || $0.destination == "10.99.14.3" }, "nothing of b and c")
        #expect(tap.frames.allSatisfy { $0.port == -1 })
        let end = try #require(tap.end)
        #expect(end.frames == UInt64(tap.frames.count) && end.reason.isEmpty)
        #expect(try await !pluginLoaded(lab.spec), "an endpoint capture needs no plugin")
        try await shutDown(worker, spec: lab.spec)
    }

    @Test func aReaderThatNeverReadsLosesFramesNotTheNetwork() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let lab = try await captureLab(scratch, worker)
        let (id, socket) = try await startCapture(worker)
        let tap = try CaptureTap(path: socket)
        // About 14 MB of frames, far more than the 4 MiB the capture socket holds.
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 5000, pace: ["-f", "-s", "1400"]) == 0)
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 3) == 0, "the network works on")
        let captures = try await status(worker).captures ?? []
        let capture = try #require(captures.first { $0.id == id })
        #expect(capture.dropped > 0, "the capture counts what it dropped: \(capture)")
        #expect(capture.clientPID == getpid())
        try tap.finish(timeout: .seconds(20))
        let end = try #require(tap.end)
        #expect(end.dropped > 0 && end.frames == UInt64(tap.frames.count))
        try await shutDown(worker, spec: lab.spec)
    }

    @Test func thePluginStaysWhileAnySegmentCaptureRunsAndGoesWithTheLast() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let lab = try await captureLab(scratch, worker)
        let first = try CaptureTap(path: try await startCapture(worker).1)
        let second = try CaptureTap(path: try await startCapture(worker).1)
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 1) == 0)
        try first.finish()
        #expect(try pluginLoadedNow(lab.spec), "the second capture still needs it")
        try second.read(for: .milliseconds(200))
        #expect(second.frames.contains { EchoFrame($0.payload) != nil }, "and still gets frames")
        try second.finish()
        #expect(await Host.eventually { (try? self.pluginLoadedNow(lab.spec)) == false }, "\(worker.logTail())")
        #expect((try await status(worker).captures ?? []).isEmpty)
        try await shutDown(worker, spec: lab.spec)
    }

    @Test func aKilledWorkerLeavesThePluginInertAndTheNextWorkerUnloadsIt() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let lab = try await captureLab(scratch, first)
        let tap = try CaptureTap(path: try await startCapture(first).1)
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 1) == 0)
        first.signal(SIGKILL)
        _ = await first.waitForExit()
        _ = tap

        #expect(try pluginLoadedNow(lab.spec), "the killed worker could not unload it")
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 3) == 0, "the switch forwards on, the plugin inert")
        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        _ = try await start(second, lab.spec, restoring: lab.endpoints)
        #expect(try !pluginLoadedNow(lab.spec), "the next worker unloads it at start")
        #expect(!Host.exists(lab.spec.paths.capturesDir), "and removes the old capture sockets")
        #expect(ping(lab.namespaces[0], "10.99.14.2", count: 1) == 0)
        try await shutDown(second, spec: lab.spec)
    }
}

extension WorkerProcessTests {
    /// The next capture starts while the last one's command has just closed its side: the
    /// sink must stay, or come back, for the new one (a race seen when the check for a running
    /// plugin came before an `await`).
    @Test func aSegmentCaptureStartedAsAnotherEndsGetsFramesToo() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let lab = try await captureLab(scratch, worker)
        var previous: CaptureTap?
        for round in 1...4 {
            if let previous { shutdown(previous.socket.fd, Int32(SHUT_RDWR)) }
            let tap = try CaptureTap(path: try await startCapture(worker).1)
            #expect(ping(lab.namespaces[0], "10.99.14.2", count: 2) == 0)
            try tap.read(for: .milliseconds(200))
            #expect(tap.frames.contains { EchoFrame($0.payload) != nil }, "round \(round): \(worker.logTail())")
            previous = tap
        }
        try previous?.finish()
        #expect(await Host.eventually { (try? self.pluginLoadedNow(lab.spec)) == false })
        try await shutDown(worker, spec: lab.spec)
    }
}
