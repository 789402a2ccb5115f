#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
@testable import vde_networker

/// The epoll thread behind ``TapWatch``, driven by pipes: a pipe whose write end closes reports
/// a hang-up on its read end, as a tap's tun descriptor reports an error when the tap goes.
@Suite(.timeLimit(.minutes(1))) struct DescriptorWatcherTests {
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

    @Test func aHangUpCallsTheHandlerOnce() async throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let (readEnd, writeEnd) = makePipe()
        defer { close(readEnd) }
        let calls = Calls()
        let token = try #require(watcher.watchErrors(of: readEnd) { calls.record() })
        #expect(calls.count.withLock { $0 } == 0)
        close(writeEnd)
        var events = calls.stream.makeAsyncIterator()
        _ = await events.next()
        // One-shot: a hang-up that stays does not call again.
        var probe = pollfd(fd: readEnd, events: 0, revents: 0)
        #expect(poll(&probe, 1, 0) == 1)
        #expect(calls.count.withLock { $0 } == 1)
        watcher.forget(token)
    }

    @Test func aForgottenDescriptorCallsNothing() async throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let forgotten = makePipe()
        let watched = makePipe()
        defer { close(forgotten.read); close(watched.read) }
        let calls = Calls()
        let token = try #require(watcher.watchErrors(of: forgotten.read) { calls.record() })
        watcher.forget(token)
        close(forgotten.write)
        // A second watch whose hang-up comes after: once it has been reported, the forgotten
        // one (earlier, on the same thread) would have been too.
        let second = Calls()
        let secondToken = try #require(watcher.watchErrors(of: watched.read) { second.record() })
        close(watched.write)
        var events = second.stream.makeAsyncIterator()
        _ = await events.next()
        #expect(calls.count.withLock { $0 } == 0)
        watcher.forget(secondToken)
    }

    @Test func aClosedDescriptorIsRefusedWithoutCallingTheHandler() throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let (readEnd, writeEnd) = makePipe()
        close(readEnd)
        close(writeEnd)
        let calls = Calls()
        #expect(watcher.watchErrors(of: readEnd) { calls.record() } == nil)
        #expect(calls.count.withLock { $0 } == 0)
    }

    @Test func inputIsNoHangUpAndTheWatchComesBackAfterTheDelay() async throws {
        let watcher = try #require(DescriptorWatcher(rearmDelay: .milliseconds(100)))
        let (readEnd, writeEnd) = makePipe()
        defer { close(readEnd) }
        let calls = Calls()
        let token = try #require(watcher.watchErrors(of: readEnd) { calls.record() })
        // Traffic: the one-shot fires, the descriptor shows input only, the watch waits.
        var byte: UInt8 = 1
        #expect(write(writeEnd, &byte, 1) == 1)
        try await eventually("the watch disarmed after input") { watcher.isDisarmed(token) }
        #expect(calls.count.withLock { $0 } == 0)
        // The reader (the plug) takes the input; re-armed after the delay, a hang-up then calls the handler.
        #expect(read(readEnd, &byte, 1) == 1)
        try await eventually("the watch re-armed") { !watcher.isDisarmed(token) }
        close(writeEnd)
        var events = calls.stream.makeAsyncIterator()
        _ = await events.next()
        #expect(calls.count.withLock { $0 } == 1)
        watcher.forget(token)
    }
}
