import Glibc
import Shared
import Testing

@testable import vde_supervisor

/// The capture command's read loop against a socket pair standing in for the worker's socket:
/// `-c` ends it from this side, the end record gives the counts, frames after the stop are seen
/// but not written.
struct CaptureStreamTests {
    static func pair() throws -> (command: UnixSocket, worker: Int32) {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        return (UnixSocket(adopting: fds[0], path: "pair"), fds[1])
    }

    static func send(_ records: [CaptureRecord], to fd: Int32) throws {
        for record in records { try FileSystem.writeAll(record.bytes, to: fd) }
    }

    static func frame(_ n: Int64) -> CaptureRecord {
        CaptureRecord(timestampNanoseconds: n, payload: CaptureFilterTests.icmpFrame)
    }

    static func run(_ records: [CaptureRecord], count: Int?, filter: String? = nil) throws -> (
        CaptureStream.Outcome, Int
    ) {
        let (command, worker) = try pair()
        defer {
            command.close()
            close(worker)
        }
        try send(records, to: worker)
        shutdown(worker, Int32(SHUT_WR))
        let session = try CaptureFilterTests.session()
        let path = "/tmp/vde-capture-stream-test-\(getpid())-\(records.count).pcap"
        defer { unlink(path) }
        let outcome: CaptureStream.Outcome
        do {
            let writer = try PcapWriter(session: session, path: path)
            let arguments = CaptureArguments(
                output: .file(path), count: count, durationMilliseconds: nil, snaplen: 65535)
            outcome = CaptureStream(
                socket: command, arguments: arguments, filter: try filter.map { try session.compile($0) },
                sink: .pcap(writer), endpointCapture: false, signals: nil
            ).run()
        }
        let written = try FileSystem.read(path, limit: 1 << 20).count
        return (outcome, written)
    }

    @Test func countEndsItFromThisSideAndTheEndRecordGivesTheCounts() throws {
        let records =
            [Self.frame(1), Self.frame(2), Self.frame(3)]
            + [CaptureRecord.end(frames: 3, dropped: 1, reason: "", timestampNanoseconds: 4)]
        let (outcome, written) = try Self.run(records, count: 2)
        #expect(outcome.captured == 2)
        #expect(outcome.received == 3)
        #expect(outcome.stoppedBy == "-c 2 reached")
        #expect(outcome.summary == "2 frames captured (3 seen), 1 dropped")
        #expect(written == 24 + 2 * (16 + CaptureFilterTests.icmpFrame.count))
    }

    @Test func theFilterDropsFramesThatDoNotMatchAndTheWorkersReasonIsKept() throws {
        let records =
            [Self.frame(1), Self.frame(2)]
            + [CaptureRecord.end(frames: 2, dropped: 0, reason: "the network was deleted", timestampNanoseconds: 3)]
        let (outcome, written) = try Self.run(records, count: nil, filter: "arp")
        #expect(outcome.captured == 0)
        #expect(outcome.stoppedBy == nil)
        #expect(outcome.end?.reason == "the network was deleted")
        #expect(written == 24)
    }

    @Test func aWorkerThatClosesWithoutEndRecordLeavesTheDropsUnknown() throws {
        let (outcome, _) = try Self.run([Self.frame(1)], count: nil)
        #expect(outcome.end == nil)
        #expect(outcome.summary == "1 frame captured (1 seen), drops unknown (the worker sent no end record)")
    }
}
