import CLinux
import Shared
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.timeLimit(.minutes(1))) struct DescriptorWatcherTests {
    private func pipePair() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        return (fds[0], fds[1])
    }

    @Test func aWatchFiresOnceWhenTheDescriptorBecomesReadable() async throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let pipe = pipePair()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        let (events, continuation) = AsyncStream<Void>.makeStream()
        _ = try watcher.watch(pipe.read, events: .readable) { continuation.yield() }
        #expect(write(pipe.write, "x", 1) == 1)
        var iterator = events.makeAsyncIterator()
        #expect(await iterator.next() != nil)
        continuation.finish()
        #expect(await iterator.next() == nil, "one-shot: the handler ran once")
    }

    @Test func errorsOnlyReportsTheHangUp() async throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let pipe = pipePair()
        defer { close(pipe.read) }
        let (events, continuation) = AsyncStream<Void>.makeStream()
        _ = try watcher.watch(pipe.read, events: .errorsOnly) { continuation.finish() }
        close(pipe.write)
        for await _ in events {}
    }

    @Test func aCancelledWatchNeverRunsAndTheDescriptorCanBeWatchedAgain() async throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let pipe = pipePair()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        let cancelled = EventCount()
        let token = try watcher.watch(pipe.read) { cancelled.bump() }
        watcher.cancel(token)
        let (events, continuation) = AsyncStream<Void>.makeStream()
        #expect(write(pipe.write, "x", 1) == 1)
        _ = try watcher.watch(pipe.read) { continuation.finish() }
        for await _ in events {}
        #expect(cancelled.value == 0)
    }

    /// A replaced or forgotten watch is released outside the watcher's lock: what its handler
    /// holds may call the watcher as it goes (a TapWatch cancels its watch in its deinit).
    /// Before, this crashed the test process ("Recursive call to lock Mutex").
    @Test func aDroppedWatchsHandlerMayCallTheWatcherAsItGoes() throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let pipe = pipePair()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        final class CancelsOnRelease: Sendable {
            let watcher: DescriptorWatcher
            let token: DescriptorWatcher.Token
            init(_ watcher: DescriptorWatcher, _ token: DescriptorWatcher.Token) {
                self.watcher = watcher
                self.token = token
            }
            deinit { watcher.cancel(token) }
        }
        let other = try watcher.watch(pipe.write, events: .errorsOnly) {}
        var holder: CancelsOnRelease? = CancelsOnRelease(watcher, other)
        _ = try watcher.watch(pipe.read) { [holder] in _ = holder }
        holder = nil
        _ = try watcher.watch(pipe.read) {}  // replaces the first watch: its holder goes
        holder = CancelsOnRelease(watcher, other)
        _ = try watcher.watch(pipe.read) { [holder] in _ = holder }
        holder = nil
        watcher.forget(pipe.read)  // drops the watch: its holder goes
    }

    /// Watching a descriptor again replaces its watch: only the later handler runs.
    @Test func aSecondWatchOfADescriptorReplacesTheFirst() async throws {
        let watcher = try #require(DescriptorWatcher.shared)
        let pipe = pipePair()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        let replaced = EventCount()
        _ = try watcher.watch(pipe.read) { replaced.bump() }
        let (events, continuation) = AsyncStream<Void>.makeStream()
        _ = try watcher.watch(pipe.read) { continuation.finish() }
        #expect(write(pipe.write, "x", 1) == 1)
        for await _ in events {}
        #expect(replaced.value == 0)
    }

    /// A full non-blocking pipe: `writeAll` waits in the watcher (no thread) until the reader
    /// makes room, and every byte arrives in order.
    @Test func writeAllWaitsForRoomAndDeliversEverything() async throws {
        let pipe = pipePair()
        defer { close(pipe.read) }
        _ = clinux_set_nonblocking(pipe.write)
        let bytes = (0..<(256 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let writer = Task {
            defer { close(pipe.write) }
            try await DescriptorWatcher.writeAll(bytes, to: pipe.write)
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(pipe.read, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            received += buffer.prefix(n)
        }
        try await writer.value
        #expect(received == bytes)
    }

    @Test func writeAllThrowsWhenTheReaderIsGoneOrTheTaskIsCancelled() async throws {
        signal(SIGPIPE, SIG_IGN)
        let gone = pipePair()
        close(gone.read)
        defer { close(gone.write) }
        await #expect {
            try await DescriptorWatcher.writeAll([1, 2, 3], to: gone.write)
        } throws: { error in
            (error as? SystemCallError)?.errno == EPIPE
        }
        // A pipe nobody reads: the write waits until the task is cancelled.
        let full = pipePair()
        defer {
            close(full.read)
            close(full.write)
        }
        _ = clinux_set_nonblocking(full.write)
        let writer = Task {
            try await DescriptorWatcher.writeAll([UInt8](repeating: 1, count: 1 << 20), to: full.write)
        }
        try await Task.sleep(for: .milliseconds(50))
        writer.cancel()
        let result = await writer.result
        #expect(throws: SystemCallError.self) { try result.get() }
        #expect((try? result.get()) == nil)
        if case .failure(let error as SystemCallError) = result { #expect(error.errno == ECANCELED) }
    }
}

@Suite(.timeLimit(.minutes(1))) struct TimeoutTests {
    @Test func returnsTheResultOfAnOperationThatFinishesInTime() async {
        #expect(await Timeout.run(.seconds(10)) { 42 } == 42)
    }

    @Test func givesUpAndCancelsTheOperationAtTheTimeout() async {
        let cancelled = EventCount()
        let start = ContinuousClock.now
        let result: Int? = await Timeout.run(.milliseconds(20)) {
            do {
                try await Task.sleep(for: .seconds(30))
            } catch {
                cancelled.bump()
            }
            return 1
        }
        #expect(result == nil)
        #expect(cancelled.value > 0, "the operation was cancelled and had ended")
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    @Test func throwsWhatTheOperationThrows() async {
        struct Failure: Error {}
        await #expect(throws: Failure.self) {
            _ = try await Timeout.run(.seconds(10)) { () async throws -> Int in throw Failure() }
        }
    }

    @Test func afterActsOnceTheTimeoutHasPassed() async {
        let (fired, continuation) = AsyncStream.makeStream(of: Void.self)
        Timeout.after(.milliseconds(10)) { continuation.yield() }
        var events = fired.makeAsyncIterator()
        #expect(await events.next() != nil)
    }

    @Test func afterDoesNotActWhenCancelledInTime() async {
        let acted = EventCount()
        let timer = Timeout.after(.milliseconds(50)) { acted.bump() }
        timer.cancel()
        await timer.value
        #expect(acted.value == 0)
    }
}
