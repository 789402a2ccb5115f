import CLinux
import Synchronization
import Testing

@testable import Shared

#if canImport(Glibc)
    import Glibc
#endif

private func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress.map { $0 + offset }, $0.count - offset) }
        precondition(n > 0, "write failed")
        offset += n
    }
}

private func texts(_ lines: [LineFramer.Line]) -> [String] {
    lines.map { line in
        switch line {
        case .line(let bytes): String(decoding: bytes, as: UTF8.self)
        case .oversized(let length): "<oversized \(length)>"
        }
    }
}

/// The inode `fd` refers to, nil when it is closed.
private func inode(_ fd: Int32) -> UInt? {
    var info = stat()
    return fstat(fd, &info) == 0 ? UInt(info.st_ino) : nil
}

/// The threads of this process named like the descriptor watcher, whose thread the pipe
/// poller reads on (task IDs).
private func watcherThreads() -> Set<String> {
    Set(
        (FileSystem.listDirectory("/proc/self/task") ?? []).filter { task in
            FileSystem.readFile("/proc/self/task/\(task)/comm")?.split(separator: "\n").first.map(String.init)
                == DescriptorWatcher.threadName
        })
}

/// User and system CPU ticks of these threads of this process.
private func cpuTicks(ofThreads tasks: Set<String>) -> Int {
    var total = 0
    for task in tasks {
        guard let stat = FileSystem.readFile("/proc/self/task/\(task)/stat"), let close = stat.lastIndex(of: ")")
        else { continue }
        // After "(comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        total += (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }
    return total
}

/// True while `fd` still refers to the pipe `pipeInode` (tests in other suites run in parallel
/// and may reuse the number as soon as it is closed).
private func stillOpen(_ fd: Int32, pipeInode: UInt?) -> Bool { inode(fd) == pipeInode }

@Suite(.timeLimit(.minutes(1))) struct PipeLinesTests {
    @Test func pipeIsSmallAndCloseOnExec() throws {
        let pipe = try PipeLines.open()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        #expect(fcntl(pipe.read, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(pipe.write, F_GETFD) & FD_CLOEXEC != 0)
        let getPipeSize: Int32 = 1032  // F_GETPIPE_SZ, which Glibc does not export
        #expect(fcntl(pipe.read, getPipeSize) == 4096)
    }

    @Test func linesArriveUntilTheWriterClosesThenTheReadEndIsClosed() async throws {
        let pipe = try PipeLines.open()
        let pipeInode = inode(pipe.read)
        let lines = try PipeLines.lines(from: pipe.read, maxLineBytes: 24)
        writeAll(pipe.write, "one\ntw")
        writeAll(pipe.write, "o\n" + String(repeating: "x", count: 40) + "\nlast without newline")
        close(pipe.write)
        var received: [LineFramer.Line] = []
        for await line in lines { received.append(line) }
        #expect(texts(received) == ["one", "two", "<oversized 40>", "last without newline"])
        #expect(!stillOpen(pipe.read, pipeInode: pipeInode))
    }

    @Test func moreThanOnePipeBufferPassesThrough() async throws {
        let pipe = try PipeLines.open()
        let lines = try PipeLines.lines(from: pipe.read, maxLineBytes: 100)
        let writer = Task.detached {
            for i in 0..<2000 { writeAll(pipe.write, "line \(i)\n") }
            close(pipe.write)
        }
        var count = 0
        for await line in lines {
            #expect(texts([line]) == ["line \(count)"])
            count += 1
        }
        await writer.value
        #expect(count == 2000)
    }

    @Test func droppingTheStreamClosesTheReadEnd() async throws {
        let pipe = try PipeLines.open()
        let pipeInode = inode(pipe.read)
        defer { close(pipe.write) }
        do {
            let lines = try PipeLines.lines(from: pipe.read, maxLineBytes: 100)
            let reader = Task { for await _ in lines {} }
            reader.cancel()
            await reader.value
        }
        // The poller closes it after it has seen the cancellation: poll for that.
        let deadline = ContinuousClock.now + .seconds(5)
        while stillOpen(pipe.read, pipeInode: pipeInode) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(!stillOpen(pipe.read, pipeInode: pipeInode))
    }

    /// Descriptors closed at EOF are reused by the next pipes at once; each stream must still end
    /// exactly when its own writer closes.
    @Test func manyShortLivedPipesEachEndWithTheirOwnWriter() async throws {
        for round in 0..<200 {
            let pipe = try PipeLines.open()
            let lines = try PipeLines.lines(from: pipe.read, maxLineBytes: 100)
            writeAll(pipe.write, "round \(round)\n")
            close(pipe.write)
            var received: [String] = []
            for await line in lines { received += texts([line]) }
            #expect(received == ["round \(round)"])
        }
    }

    /// The stream of a duplicated read end is dropped while the original stays open and then
    /// has data: the poller must have taken the duplicate out of its epoll set before closing
    /// it, or the set keeps reporting the open file under a token it forgot, and the poller
    /// spins.
    @Test func droppingADuplicatesStreamLeavesNoSpinningPoller() async throws {
        // Only this test's poller and watcher are measured: the process's shared ones read
        // other tests' pipes.
        let others = watcherThreads()
        let watcher = try #require(DescriptorWatcher.make())
        let poller = try PipePollerSlot(watcher: { watcher }).get()
        let pipe = try PipeLines.open()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        let duplicate = dup(pipe.read)
        try #require(duplicate >= 0)
        let duplicateInode = inode(duplicate)
        _ = clinux_set_nonblocking(duplicate)
        let (lines, continuation) = AsyncStream<LineFramer.Line>.makeStream()
        poller.add(fd: duplicate, maxLineBytes: 100, continuation: continuation)
        let reader = Task { for await _ in lines {} }
        reader.cancel()
        await reader.value
        let deadline = ContinuousClock.now + .seconds(5)
        while stillOpen(duplicate, pipeInode: duplicateInode) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        try #require(!stillOpen(duplicate, pipeInode: duplicateInode))

        // The poller closed the duplicate, so its watcher's thread runs and has its name.
        let mine = watcherThreads().subtracting(others)
        try #require(!mine.isEmpty, "this test's watcher thread is not found")

        writeAll(pipe.write, "readable now\n")
        let before = cpuTicks(ofThreads: mine)
        try await Task.sleep(for: .milliseconds(500))
        let used = cpuTicks(ofThreads: mine) - before
        // A spinning poller uses the whole half second (50 ticks at 100 Hz); an idle one none.
        #expect(used < 10, "the poller's watcher thread used \(used) ticks in 0.5 s")
    }

    /// The poller's wake-up pipe cannot be made (no descriptors left): an error for the caller,
    /// not a crash of the process, and the next use tries again.
    @Test func aPollerWithoutItsWakeUpPipeIsAnErrorAndTheNextUseRetries() throws {
        let attempts = Mutex(0)
        let slot = PipePollerSlot(makePipe: {
            let attempt = attempts.withLock {
                $0 += 1
                return $0
            }
            if attempt == 1 { return .failure(PipeLines.OpenError(errno: EMFILE)) }
            return Result { () throws(PipeLines.OpenError) in try PipeLines.open() }
        })
        let error = #expect(throws: PipeLines.OpenError.self) { try slot.get() }
        #expect(error?.description.contains("Too many open files") == true, "\(String(describing: error))")
        let first = try slot.get()
        let again = try slot.get()
        #expect(first === again, "one poller per slot")
        #expect(attempts.withLock { $0 } == 2)
    }
}
