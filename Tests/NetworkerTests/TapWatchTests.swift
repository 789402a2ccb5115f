import Shared
import Synchronization
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// ``TapWatch`` on the process's epoll thread, driven by pipes: a pipe whose write end closes reports
/// a hang-up on its read end, as a tap's tun descriptor reports an error when the tap goes.
@Suite(.timeLimit(.minutes(1))) struct TapWatchTests {
    final class Calls: Sendable {
        let count = Mutex(0)
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        func record() {
            count.withLock { $0 += 1 }
            continuation.yield()
        }
    }

    func makePipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0)
        return (fds[0], fds[1])
    }

    /// A watched pipe (taken over by the watch) and the write end that plays the tap.
    func watchedPipe(rearmDelay: Duration = .seconds(1), calls: Calls) throws -> (watch: TapWatch, write: Int32) {
        let watcher = try #require(DescriptorWatcher.shared)
        let (readEnd, writeEnd) = makePipe()
        let watch = try TapWatch.watch(descriptor: readEnd, watcher: watcher, rearmDelay: rearmDelay) { calls.record() }
        return (watch, writeEnd)
    }

    @Test func aHangUpCallsTheHandlerOnce() async throws {
        let calls = Calls()
        let (watch, writeEnd) = try watchedPipe(calls: calls)
        defer { watch.close() }
        #expect(calls.count.withLock { $0 } == 0)
        close(writeEnd)
        var events = calls.stream.makeAsyncIterator()
        _ = await events.next()
        #expect(calls.count.withLock { $0 } == 1)
    }

    @Test func aClosedWatchCallsNothing() async throws {
        let calls = Calls()
        let (closed, closedWrite) = try watchedPipe(calls: calls)
        closed.close()
        close(closedWrite)
        // A second watch whose hang-up comes after: once it has been reported, the closed one
        // (earlier, on the same thread) would have been too.
        let second = Calls()
        let (watch, writeEnd) = try watchedPipe(calls: second)
        defer { watch.close() }
        close(writeEnd)
        var events = second.stream.makeAsyncIterator()
        _ = await events.next()
        #expect(calls.count.withLock { $0 } == 0)
    }

    @Test func aClosedDescriptorIsRefusedWithoutCallingTheHandler() throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let (readEnd, writeEnd) = makePipe()
        // A number far above the lowest free one, closed: tests that run alongside open
        // descriptors of their own, and one of them could take a low number back at once.
        let closed = fcntl(readEnd, F_DUPFD_CLOEXEC, 900)
        try #require(closed >= 900)
        close(closed)
        close(readEnd)
        close(writeEnd)
        let calls = Calls()
        #expect(throws: TapWatch.Unavailable.self) {
            _ = try TapWatch.watch(descriptor: closed, watcher: watcher, rearmDelay: .seconds(1)) { calls.record() }
        }
        #expect(calls.count.withLock { $0 } == 0)
    }

    @Test func inputIsNoHangUpAndTheWatchComesBackAfterTheDelay() async throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let (readEnd, writeEnd) = makePipe()
        let calls = Calls()
        let watch = try TapWatch.watch(descriptor: readEnd, watcher: watcher, rearmDelay: .milliseconds(100)) {
            calls.record()
        }
        defer { watch.close() }
        // Traffic: the one-shot fires, the descriptor shows input only, the watch waits.
        var byte: UInt8 = 1
        #expect(write(writeEnd, &byte, 1) == 1)
        try await eventually("the watch disarmed after input") { watch.isDisarmed }
        #expect(calls.count.withLock { $0 } == 0)
        // The reader (the plug) takes the input; re-armed after the delay, a hang-up then calls the handler.
        #expect(read(readEnd, &byte, 1) == 1)
        try await eventually("the watch re-armed") { !watch.isDisarmed }
        close(writeEnd)
        var events = calls.stream.makeAsyncIterator()
        _ = await events.next()
        #expect(calls.count.withLock { $0 } == 1)
    }
}
