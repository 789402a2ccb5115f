import Logging
import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's output to its supervisor: a line goes out at once when nothing waits before it,
/// and whatever a full pipe holds back is written later, in order, never overtaken.
@Suite struct SupervisorLinkTests {
    static let logger: Logger = {
        var logger = Logger(label: "supervisor-link-test")
        logger.logLevel = .critical
        return logger
    }()

    func message(_ index: Int, padding: Int = 0) -> WorkerMessage {
        .event(.hello(pid: Int32(index), detail: String(repeating: "x", count: padding)))
    }

    /// The `hello` pids of the lines read from `fd` until `count` arrived (or 10 s passed), on a
    /// thread of its own: the link's writer task needs the cooperative threads meanwhile.
    func readPIDs(from fd: Int32, count: Int, after alreadyRead: [UInt8] = []) async throws -> [Int32] {
        try await Blocking.run { Result { try Self.blockingReadPIDs(from: fd, count: count, after: alreadyRead) } }
            .get()
    }

    static func blockingReadPIDs(from fd: Int32, count: Int, after alreadyRead: [UInt8]) throws -> [Int32] {
        var pids: [Int32] = []
        var pending = alreadyRead
        let deadline = ContinuousClock.now + .seconds(10)
        while pids.count < count, ContinuousClock.now < deadline {
            if takeLines(&pending, into: &pids) { continue }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 100) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            pending += buffer[0..<n]
        }
        return pids
    }

    /// Moves the whole lines of `pending` into `pids`; false when there was none.
    static func takeLines(_ pending: inout [UInt8], into pids: inout [Int32]) -> Bool {
        var took = false
        while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
            let line = Array(pending[..<end])
            pending.removeFirst(end + 1)
            took = true
            guard case .event(.hello(let pid, _))? = try? JSONCoding.decode(WorkerMessage.self, from: line) else {
                Issue.record("not a hello: \(String(decoding: line, as: UTF8.self))")
                continue
            }
            pids.append(pid)
        }
        return took
    }

    /// A link that writes into a fresh pipe of 4 kB, closed (both ends too) after `body`.
    func withPipeLink(_ body: (SupervisorLink, _ read: Int32, _ write: Int32) async throws -> Void) async throws {
        let pipe = try PipeLines.open()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        // The test reads on a cooperative thread, which must never block: the writer task
        // needs one to make progress.
        _ = fcntl(pipe.read, F_SETFL, fcntl(pipe.read, F_GETFL) | O_NONBLOCK)
        let link = SupervisorLink(output: .pipe(pipe.write), logger: Self.logger)
        defer { link.close() }
        try await body(link, pipe.read, pipe.write)
    }

    @Test func aLineIsWrittenBeforeSendReturns() async throws {
        try await withPipeLink { link, read, _ in
            link.send(message(1))
            // Nothing else runs meanwhile: the line is in the pipe already.
            var entry = pollfd(fd: read, events: Int16(POLLIN), revents: 0)
            #expect(poll(&entry, 1, 0) == 1, "the line is readable at once")
            let pids = try await readPIDs(from: read, count: 1)
            #expect(pids == [1])
        }
    }

    @Test func linesAFullPipeHoldsBackLeaveInOrderAndLaterOnesWaitBehindThem() async throws {
        try await withPipeLink { link, readEnd, _ in
            // 30 lines of about 500 bytes: the pipe takes the first few, the rest wait.
            for index in 1...30 { link.send(message(index, padding: 450)) }
            // Then room is made, a little at a time, and a line sent into it at once: it must
            // wait behind those still held back rather than take the room (the writer task
            // races us for it).
            var drained: [UInt8] = []
            for index in 31...230 {
                var buffer = [UInt8](repeating: 0, count: 600)
                let n = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
                if n > 0 { drained += buffer[0..<n] }
                link.send(message(index, padding: 450))
            }
            let held = try await readPIDs(from: readEnd, count: 230, after: drained)
            #expect(held == Array(1...230))
            // Once drained, lines go out at once again, still in order.
            for index in 231...233 { link.send(message(index)) }
            let later = try await readPIDs(from: readEnd, count: 3)
            #expect(later == [231, 232, 233])
        }
    }

    @Test func linesSentAfterCloseAreDropped() async throws {
        try await withPipeLink { link, read, write in
            link.send(message(1))
            link.close()
            link.send(message(2))
            // A marker written past the link: what the link wrote comes before it.
            try FileSystem.writeAll(try JSONCoding.encode(message(99)) + [UInt8(ascii: "\n")], to: write)
            let pids = try await readPIDs(from: read, count: 2)
            #expect(pids == [1, 99], "only the line sent before the close")
        }
    }
}
