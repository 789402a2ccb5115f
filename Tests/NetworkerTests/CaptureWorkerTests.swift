import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's captures against the fake lab (CaptureFakes.swift): the fake plugin connects to
/// the worker's sink as the real one does, and a test writes the switch's frames there; real
/// unix sockets, no root. The same with vde_switch, the real plugin and namespaces is in
/// NetworkerIntegrationTests/CaptureTests.swift.
@Suite(.timeLimit(.minutes(1))) struct CaptureWorkerTests {
    func started(_ fixture: FakeWorkerFixture) async throws {
        _ = try await fixture.worker.start(spec: fixture.spec, restoring: [])
    }

    func spec(_ endpoint: EndpointID? = nil) -> CaptureSpec { CaptureSpec(id: .random(), endpointID: endpoint) }

    func frame(_ byte: UInt8, port: Int32 = 1) -> CaptureRecord {
        CaptureRecord(port: port, timestampNanoseconds: 5, payload: [UInt8](repeating: byte, count: 60))
    }

    /// Reads until the end record (after shutting down its side when `finish`). The reads block,
    /// so they run on a thread of their own: the worker's actor needs the pool meanwhile.
    func drain(_ client: UnixSocket, finish: Bool = true) async throws -> (frames: [CaptureRecord], end: CaptureRecord?)
    {
        if finish { shutdown(client.fd, Int32(SHUT_WR)) }
        return try await Blocking.run { () -> Result<([CaptureRecord], CaptureRecord?), any Error> in
            Result {
                var reader = CaptureRecordReader()
                var frames: [CaptureRecord] = []
                let deadline = ContinuousClock.now + .seconds(5)
                while true {
                    let chunk = try client.receive(maximum: 1 << 16, deadline: deadline)
                    if chunk.isEmpty { return (frames, nil) }
                    reader.append(chunk)
                    while let record = try reader.next() {
                        if record.kind == .end { return (frames, record) }
                        frames.append(record)
                    }
                }
            }
        }.get()
    }

    /// Reads records until `count` frames arrived (on a thread of its own, as ``drain(_:finish:)``).
    func receive(_ count: Int, from client: UnixSocket) async throws -> [CaptureRecord] {
        try await Blocking.run { () -> Result<[CaptureRecord], any Error> in
            Result {
                var reader = CaptureRecordReader()
                var frames: [CaptureRecord] = []
                let deadline = ContinuousClock.now + .seconds(5)
                while frames.count < count {
                    let chunk = try client.receive(maximum: 1 << 16, deadline: deadline)
                    guard !chunk.isEmpty else { break }
                    reader.append(chunk)
                    while let record = try reader.next() { frames.append(record) }
                }
                return frames
            }
        }.get()
    }

    @Test func aSegmentCaptureLoadsThePluginHandsOnItsFramesAndUnloadsItAfter() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let capture = spec()
        let socket = try await fixture.worker.startCapture(capture)
        #expect(socket == fixture.paths.captureSocket(capture.id))
        let client = try UnixSocket.connect(to: socket, timeout: .seconds(1))
        defer { client.close() }
        #expect(fixture.lab.capturePlugin.loaded)
        #expect(fixture.lab.capturePlugin.commands.contains("plugin/add \(FakeCapturePlugin.path)"))
        #expect(fixture.lab.capturePlugin.commands.contains("vdecapture/start \(fixture.paths.captureSink)"))
        try await eventually("the socket's path to go once connected") { access(socket, F_OK) != 0 }

        fixture.lab.capturePlugin.send([frame(1, port: 2), frame(2, port: 3)])
        let frames = try await receive(2, from: client)
        #expect(frames == [frame(1, port: 2), frame(2, port: 3)], "the plugin's records, as they came")

        let status = try #require(await fixture.worker.status().captures?.first)
        #expect(status.id == capture.id && status.endpointID == nil && status.frames == 2)
        #expect(status.clientPID == getpid() && status.clientUID == getuid())

        let (_, end) = try await drain(client)
        let counters = try #require(end?.endCounters, "the command gets an end record")
        #expect(counters.frames == 2 && counters.dropped == 0 && counters.reason == "")
        try await eventually("the plugin to be unloaded") { !fixture.lab.capturePlugin.loaded }
        #expect(fixture.lab.capturePlugin.commands.suffix(2) == ["vdecapture/stop", "plugin/del vdecapture"])
        #expect(access(fixture.paths.captureSink, F_OK) != 0)
        #expect(await fixture.worker.status().captures == nil)
        await fixture.cleanUp()
    }

    @Test func recordsThePluginWritesInPiecesArriveWhole() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let client = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { client.close() }
        try await eventually("connected") { await fixture.worker.status().captures?.first?.clientPID != nil }
        let records = [frame(1), frame(2, port: 4), frame(3)]
        let stream = records.flatMap(\.bytes)
        let sink = fixture.lab.capturePlugin.sink
        // Cut inside a header, inside a payload, and between two records; each piece is read
        // by the worker (the sink's queue is empty) before the next one goes.
        var start = 0
        for cut in [10, 24 + 30, 84 + 84, stream.count] {
            let piece = Array(stream[start..<cut])
            _ = piece.withUnsafeBytes { send(sink, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            try await eventually("the worker to read the piece") {
                var queued: Int32 = 0
                return ioctl(sink, UInt(TIOCOUTQ), &queued) == 0 && queued == 0
            }
            start = cut
        }
        #expect(try await receive(3, from: client) == records)
        _ = try await drain(client)
        await fixture.cleanUp()
    }

    @Test func twoSegmentCapturesShareThePluginAndEachGetsEveryFrame() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let first = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { first.close() }
        let second = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { second.close() }
        #expect(fixture.lab.capturePlugin.commands.filter { $0.hasPrefix("plugin/add") }.count == 1)
        // Both connected before the frames go out.
        try await eventually("both connected") {
            await fixture.worker.status().captures?.allSatisfy { $0.clientPID != nil } == true
        }
        fixture.lab.capturePlugin.send([frame(7)])
        #expect(try await receive(1, from: first) == [frame(7)])
        #expect(try await receive(1, from: second) == [frame(7)])
        _ = try await drain(first)
        try await Task.sleep(for: .milliseconds(50))
        #expect(fixture.lab.capturePlugin.loaded, "the second capture still needs the plugin")
        _ = try await drain(second)
        try await eventually("the plugin to be unloaded") { !fixture.lab.capturePlugin.loaded }
        await fixture.cleanUp()
    }

    @Test func pluginDropsCountForEverySegmentCaptureOpenMeanwhile() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let client = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { client.close() }
        fixture.lab.with { $0.capturePlugin.dropped = 5 }
        #expect(await fixture.worker.status().captures?.first?.dropped == 5)
        let later = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { later.close() }
        fixture.lab.with { $0.capturePlugin.dropped = 8 }
        let drops = await fixture.worker.status().captures?.map(\.dropped)
        #expect(drops == [5 + 3, 3] || drops == [3, 5 + 3], "the later capture counts only drops since it began")
        let (_, end) = try await drain(client)
        #expect(end?.endCounters?.dropped == 8)
        _ = try await drain(later)
        await fixture.cleanUp()
    }

    @Test func aReaderThatNeverReadsGetsDropsCountedAndNeverBlocksTheWorker() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let endpoint = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(endpoint)
        let client = try UnixSocket.connect(
            to: try await fixture.worker.startCapture(spec(endpoint.endpointID)), timeout: .seconds(1))
        defer { client.close() }
        let source = try #require(fixture.lab.capturePlugin.frameSources[endpoint.macAddress]?.source)
        try await eventually("connected") { await fixture.worker.status().captures?.first?.clientPID != nil }
        // 20 MB of frames through a socket that holds at most a few MiB; the client reads nothing.
        for round in 0..<20_000 {
            source.write([UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 1000))
            if round % 200 == 0 { try await Task.sleep(for: .milliseconds(1)) }
        }
        try await eventually("drops counted") { (await fixture.worker.status().captures?.first?.dropped ?? 0) > 0 }
        let status = try #require(await fixture.worker.status().captures?.first)
        #expect(status.frames > 0 && status.frames < 20_000)
        let (frames, end) = try await drain(client)
        let counters = try #require(end?.endCounters)
        #expect(counters.frames == UInt64(frames.count), "every frame counted as sent arrived, whole")
        #expect(counters.dropped > 0)
        #expect(source.isClosed, "the source closes with its capture")
        await fixture.cleanUp()
    }

    @Test func aSegmentCaptureWhoseReaderCatchesUpGetsFramesAgain() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let client = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { client.close() }
        try await eventually("connected") { await fixture.worker.status().captures?.first?.clientPID != nil }
        // More than the capture socket holds (4 MiB), while the command reads nothing.
        let big = CaptureRecord(port: 1, timestampNanoseconds: 1, payload: [UInt8](repeating: 1, count: 1500))
        fixture.lab.capturePlugin.send([CaptureRecord](repeating: big, count: 4000))
        try await eventually("drops counted") { (await fixture.worker.status().captures?.first?.dropped ?? 0) > 0 }
        // The command catches up: everything queued is read.
        let queued = try await Blocking.run { () -> Result<Int, any Error> in
            Result {
                var total = 0
                while let chunk = try? client.receive(maximum: 1 << 20, deadline: .now + .milliseconds(200)),
                    !chunk.isEmpty
                {
                    total += chunk.count
                }
                return total
            }
        }.get()
        #expect(queued > 0)
        let marker = CaptureRecord(port: 9, timestampNanoseconds: 2, payload: [0xab])
        try await eventually("the marker sent") { fixture.lab.capturePlugin.send([marker]) == 1 }
        #expect(try await receive(1, from: client).last == marker, "frames flow again")
        _ = try await drain(client)
        await fixture.cleanUp()
    }

    @Test func anEndpointCaptureReadsInTheEndpointsNamespaceAndEndsWhenItIsRemoved() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let endpoint = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(endpoint)
        _ = try await fixture.worker.joinEndpoint(endpoint.endpointID, sandboxKey: "/run/netns/fake1")
        let client = try UnixSocket.connect(
            to: try await fixture.worker.startCapture(spec(endpoint.endpointID)), timeout: .seconds(1))
        defer { client.close() }
        let opened = try #require(fixture.lab.capturePlugin.frameSources[endpoint.macAddress])
        #expect(opened.namespace == "/run/netns/fake1")
        #expect(!fixture.lab.capturePlugin.loaded, "an endpoint capture needs no plugin")
        try await eventually("connected") { await fixture.worker.status().captures?.first?.clientPID != nil }
        opened.source.write([0xff, 1, 2])
        opened.source.write([0x00, 1, 2])
        let frames = try await receive(2, from: client)
        #expect(frames.map(\.isOutgoing) == [true, false])

        try await fixture.worker.removeEndpoint(endpoint.endpointID)
        let (_, end) = try await drain(client, finish: false)
        #expect(end?.endCounters?.reason == "the endpoint was removed")
        #expect(end?.endCounters?.frames == 2)
        await fixture.cleanUp()
    }

    @Test func theSwitchExitingEndsSegmentCapturesWithTheReasonAndTheNextCaptureLoadsThePluginAgain() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let client = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { client.close() }
        try await eventually("connected") { await fixture.worker.status().captures?.first?.clientPID != nil }
        // The plugin goes with its switch.
        fixture.lab.with { $0.capturePlugin.loaded = false }
        try #require(fixture.lab.runningSwitch).exit(reason: "killed")
        let (_, end) = try await drain(client, finish: false)
        #expect(end?.endCounters?.reason.contains("switch exited") == true)
        try await eventually("the switch restarted") {
            fixture.lab.switchStarts == 2 && fixture.lab.runningSwitch != nil
        }
        try await eventually("running") { await fixture.worker.switchState == .running }
        let again = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { again.close() }
        #expect(fixture.lab.capturePlugin.commands.filter { $0.hasPrefix("plugin/add") }.count == 2, "loaded again")
        _ = try await drain(again)
        await fixture.cleanUp()
    }

    @Test func aJoinEndsTheCaptureOfTheTapInTheHostNamespace() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let endpoint = fixture.endpoint(2)
        _ = try await fixture.worker.addEndpoint(endpoint)
        let client = try UnixSocket.connect(
            to: try await fixture.worker.startCapture(spec(endpoint.endpointID)), timeout: .seconds(1))
        defer { client.close() }
        #expect(fixture.lab.capturePlugin.frameSources[endpoint.macAddress]?.namespace == nil, "the host's namespace")
        try await eventually("connected") { await fixture.worker.status().captures?.first?.clientPID != nil }
        _ = try await fixture.worker.joinEndpoint(endpoint.endpointID, sandboxKey: "/run/netns/fake2")
        let (_, end) = try await drain(client, finish: false)
        #expect(end?.endCounters?.reason.contains("joined") == true)
        await fixture.cleanUp()
    }

    @Test func aSegmentCaptureOfASwitchTheWorkerDidNotStartIsRefusedWithTheWayOut() async throws {
        let fixture = FakeWorkerFixture()
        fixture.lab.with { $0.probe = .answers }
        let spec = try SwitchSpec(paths: fixture.paths, mode: .useOrCreate, group: nil, numPorts: 8)
        _ = try await fixture.worker.start(spec: spec, restoring: [])
        await #expect {
            _ = try await fixture.worker.startCapture(self.spec())
        } throws: { error in
            let message = VDEError(wrapping: error).message
            return message.contains("did not start it") && message.contains("capture one container instead")
        }
        #expect(fixture.lab.capturePlugin.commands.isEmpty, "nothing sent to a switch that is not ours")
        #expect(access(fixture.paths.capturesDir, F_OK) != 0, "nothing made")
        await fixture.cleanUp()
    }

    @Test func anEndpointCaptureOfAnUnknownEndpointIsRefusedAndLeavesNothing() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        await #expect(throws: EndpointError.self) {
            _ = try await fixture.worker.startCapture(self.spec("ffffffff1"))
        }
        #expect(access(fixture.paths.capturesDir, F_OK) != 0)
        await fixture.cleanUp()
    }

    @Test func aCaptureWhoseCommandNeverConnectsIsForgottenAndThePluginUnloaded() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        await fixture.worker.setCaptureConnectTimeout(.milliseconds(100))
        let socket = try await fixture.worker.startCapture(spec())
        #expect(fixture.lab.capturePlugin.loaded)
        try await eventually("the unconnected capture to be forgotten") {
            await fixture.worker.status().captures == nil && access(socket, F_OK) != 0
        }
        try await eventually("the plugin to be unloaded") { !fixture.lab.capturePlugin.loaded }
        await fixture.cleanUp()
    }

    @Test func shutdownEndsEveryCaptureWithItsReasonAndUnloadsThePlugin() async throws {
        let fixture = FakeWorkerFixture()
        try await started(fixture)
        let client = try UnixSocket.connect(to: try await fixture.worker.startCapture(spec()), timeout: .seconds(1))
        defer { client.close() }
        try await eventually("connected") { await fixture.worker.status().captures?.first?.clientPID != nil }
        await fixture.cleanUp()
        let (_, end) = try await drain(client, finish: false)
        #expect(end?.endCounters?.reason.contains("shutting down") == true)
        #expect(!fixture.lab.capturePlugin.loaded)
        #expect(access(fixture.paths.capturesDir, F_OK) != 0, "the captures directory goes with the worker")
    }

    @Test func theNextWorkerRemovesOldCaptureSocketsAndUnloadsALeftoverPlugin() async throws {
        let first = FakeWorkerFixture()
        try await started(first)
        let socket = try await first.worker.startCapture(spec())
        first.lab.leaveRunning([:])
        // What a killed worker leaves: its sockets, and the plugin loaded in the switch.
        #expect(access(socket, F_OK) == 0 && first.lab.capturePlugin.loaded)
        let second = FakeWorkerFixture(lab: first.lab)
        try FileSystem.makeDirectories(second.paths.capturesDir, mode: 0o700)
        try FileSystem.write(Array("x".utf8), to: second.paths.capturesDir + "/0123456789ab.sock")
        try await started(second)
        #expect(!first.lab.capturePlugin.loaded, "the adopted switch has the plugin unloaded")
        #expect(access(second.paths.capturesDir, F_OK) != 0)
        await second.cleanUp()
        await first.cleanUp()
    }
}
