import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Pipes from child processes, read line by line with little memory.
///
/// swift-subprocess's `.sequence` output allocates a zero-filled read buffer as large as the
/// pipe's capacity (64 KiB) for every pending read, and holds it while the child is silent, which
/// is most of its life: per network that was 64 KiB in the supervisor (the worker's stdout) and
/// 3 × 64 KiB in the worker (the stderr of its switch and plugs), the largest part of a network's
/// memory (docs/benchmarks.md). These pipes are shrunk to one page, and one poller per process
/// reads all of them into a 512-byte buffer on its stack.
///
/// The poller waits in epoll, not poll(2): poll hands the kernel every descriptor on every
/// wake-up, and the supervisor reads two pipes per network. At 1000 networks `perf` put 14 % of
/// the supervisor's CPU under a stream of plugin calls in that poll over 2000 descriptors
/// (docs/benchmarks.md, "Per-call cost"); epoll reports only the pipes that have something.
/// Its epoll set is watched by the ``DescriptorWatcher``, on whose thread it reads: a thread of
/// its own cost every worker about 20 kB (docs/benchmarks.md, "The fork server").
public enum PipeLines {
    /// A pipe that could not be made (out of file descriptors).
    public struct OpenError: Error, Sendable, CustomStringConvertible {
        public var errno: Int32
        /// What could not be made: "a pipe", or the reading thread.
        public var what = "a pipe"
        public var description: String { "cannot create \(what): \(SystemCallError.text(errno))" }

        public init(errno: Int32, what: String = "a pipe") {
            self.errno = errno
            self.what = what
        }
    }

    /// Opens a close-on-exec pipe of one page: hand `write` to the child (and close it in this
    /// process once the child runs), and read `read` with
    /// ``lines(from:maxLineBytes:bufferingPolicy:)``, which takes it over.
    public static func open() throws(OpenError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard clinux_small_pipe(&fds, 4096) == 0 else { throw OpenError(errno: errno) }
        return (fds[0], fds[1])
    }

    /// The lines written to `fd` until every writer has closed it; then `fd` is closed. A last
    /// line without a newline is delivered too. Dropping the stream early also closes `fd`.
    /// `fd` is made non-blocking (its file description, which only this process should read).
    ///
    /// Throws when the process's pipe poller cannot be set up (its epoll instance and wake-up
    /// pipe need three descriptors: the process is out of them); `fd` is then left open, and a
    /// later call tries again.
    public static func lines(
        from fd: Int32, maxLineBytes: Int,
        bufferingPolicy: AsyncStream<LineFramer.Line>.Continuation.BufferingPolicy = .unbounded
    ) throws(OpenError) -> AsyncStream<LineFramer.Line> {
        let poller = try PipePoller.shared.get()
        let (stream, continuation) = AsyncStream<LineFramer.Line>.makeStream(bufferingPolicy: bufferingPolicy)
        _ = clinux_set_nonblocking(fd)
        poller.add(fd: fd, maxLineBytes: maxLineBytes, continuation: continuation)
        return stream
    }
}

/// The process's one ``PipePoller``, made on first use. A failure to make it (no descriptors for
/// its epoll instance or wake-up pipe) is an error for that caller, not a crash, and the next use
/// tries again.
final class PipePollerSlot: Sendable {
    typealias MakePipe = @Sendable () -> Result<(read: Int32, write: Int32), PipeLines.OpenError>

    private let poller = Mutex<PipePoller?>(nil)
    private let makePipe: MakePipe
    private let watcher: @Sendable () -> DescriptorWatcher?

    /// `makePipe` makes the wake-up pipe (tests inject failures); `watcher` is the one whose
    /// thread reads (tests give their own, to measure it).
    init(
        makePipe: @escaping MakePipe = { Result { () throws(PipeLines.OpenError) in try PipeLines.open() } },
        watcher: @escaping @Sendable () -> DescriptorWatcher? = { DescriptorWatcher.shared }
    ) {
        self.makePipe = makePipe
        self.watcher = watcher
    }

    func get() throws(PipeLines.OpenError) -> PipePoller {
        let result: Result<PipePoller, PipeLines.OpenError> = poller.withLock { slot in
            if let existing = slot { return .success(existing) }
            let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
            guard epoll >= 0 else { return .failure(PipeLines.OpenError(errno: errno)) }
            guard let watcher = watcher() else {
                close(epoll)
                return .failure(PipeLines.OpenError(errno: EMFILE, what: "the descriptor watcher"))
            }
            switch makePipe() {
            case .success(let pipe):
                let made = PipePoller(epoll: epoll, wakeRead: pipe.read, wakeWrite: pipe.write, watcher: watcher)
                do throws(SystemCallError) {
                    try made.arm()
                } catch {
                    close(epoll)
                    close(pipe.read)
                    close(pipe.write)
                    return .failure(PipeLines.OpenError(errno: error.errno, what: "the pipe poller's watch"))
                }
                slot = made
                return .success(made)
            case .failure(let error):
                close(epoll)
                return .failure(error)
            }
        }
        return try result.get()
    }
}

/// A pipe whose write end goes to one child and whose lines this process reads.
///
/// Pass ``writeEnd`` to the spawn, and call ``closeWriteEnd()`` as soon as the child runs (and
/// when the spawn failed): ``lines`` ends only once no writer is left.
public final class ChildOutputPipe: Sendable {
    public let writeEnd: Int32
    public let lines: AsyncStream<LineFramer.Line>
    private let writeEndClosed = OnceFlag()

    public init(
        maxLineBytes: Int,
        bufferingPolicy: AsyncStream<LineFramer.Line>.Continuation.BufferingPolicy = .unbounded
    ) throws(PipeLines.OpenError) {
        let pipe = try PipeLines.open()
        do {
            lines = try PipeLines.lines(from: pipe.read, maxLineBytes: maxLineBytes, bufferingPolicy: bufferingPolicy)
        } catch {
            close(pipe.read)
            close(pipe.write)
            throw error
        }
        writeEnd = pipe.write
    }

    /// Closes this process's copy of the write end; idempotent.
    public func closeWriteEnd() {
        if writeEndClosed.claim() { close(writeEnd) }
    }
}

/// Reads every pipe of ``PipeLines`` in this process, in rounds on the ``DescriptorWatcher``'s
/// thread: the watcher reports the poller's epoll set readable, a round reads what is ready
/// without waiting and arms the watch again. Only rounds read, register and close the
/// registered descriptors (one at a time: the watch is one-shot and armed again at the end of a
/// round), so a descriptor number is never reused under them.
final class PipePoller: Sendable {
    static let shared = PipePollerSlot()

    private struct Pipe {
        var fd: Int32
        var framer: LineFramer
        var continuation: AsyncStream<LineFramer.Line>.Continuation
    }

    private struct Changes {
        var nextToken: UInt64 = 0
        var added: [UInt64: Pipe] = [:]
        var dropped: Set<UInt64> = []
    }

    /// The wake-up pipe's token in the epoll set; pipes count up from 0.
    private static let wakeToken = UInt64.max

    private let changes = Mutex(Changes())
    /// The pipes being read; touched only by rounds, which never overlap.
    private let pipes = Mutex<[UInt64: Pipe]>([:])
    private let epoll: Int32
    /// A pipe that wakes the poller when pipes are added or dropped.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let watcher: DescriptorWatcher

    /// Takes over the epoll instance and the wake-up pipe; ``arm()`` starts reading.
    fileprivate init(epoll: Int32, wakeRead: Int32, wakeWrite: Int32, watcher: DescriptorWatcher) {
        _ = clinux_set_nonblocking(wakeRead)
        _ = clinux_set_nonblocking(wakeWrite)
        self.epoll = epoll
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
        self.watcher = watcher
        // Level-triggered: a pipe not read empty (see `drain`) is reported again.
        _ = clinux_epoll_arm(epoll, wakeRead, UInt32(EPOLLIN.rawValue), Self.wakeToken)
    }

    /// Asks the watcher for the next round: when the epoll set has something to report. For
    /// the life of the process: after the first, arming modifies the registration the epoll set
    /// keeps (disarmed) after each one-shot report, which allocates nothing and cannot fail
    /// while the descriptor is open.
    fileprivate func arm() throws(SystemCallError) {
        _ = try watcher.watch(epoll, events: .readable) { [self] in round() }
    }

    /// Pipes are known by a token, not by their descriptor: a descriptor closed at EOF can be
    /// reused by a new pipe before a late "dropped" for the old one arrives.
    func add(fd: Int32, maxLineBytes: Int, continuation: AsyncStream<LineFramer.Line>.Continuation) {
        let token = changes.withLock { changes in
            defer { changes.nextToken += 1 }
            return changes.nextToken
        }
        continuation.onTermination = { [self] termination in
            // Finished by the poller itself at EOF: nothing to do. Dropped by the reader: close.
            if case .cancelled = termination {
                changes.withLock { _ = $0.dropped.insert(token) }
                wake()
            }
        }
        let pipe = Pipe(fd: fd, framer: LineFramer(maxLineBytes: maxLineBytes), continuation: continuation)
        changes.withLock { $0.added[token] = pipe }
        wake()
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)  // a full wake pipe already means "wake up"
    }

    /// One round, on the watcher's thread: takes the pipes added and dropped since the last,
    /// reads what the epoll set reports ready (without waiting), and arms the watch again.
    private func round() {
        pipes.withLock { pipes in
            let (added, dropped) = changes.withLock { changes in
                defer {
                    changes.added.removeAll()
                    changes.dropped.removeAll()
                }
                return (changes.added, changes.dropped)
            }
            for (token, pipe) in added {
                pipes[token] = pipe
                // Only when the kernel has no memory for the registration: the reader sees the
                // pipe end, as it would if the child had closed it.
                if clinux_epoll_arm(epoll, pipe.fd, UInt32(EPOLLIN.rawValue), token) != 0 {
                    end(token, in: &pipes, flush: false)
                }
            }
            for token in dropped { end(token, in: &pipes, flush: false) }

            withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 64) { ready in
                let count = clinux_epoll_wait_tokens(epoll, ready.baseAddress, Int32(ready.count), 0)
                guard count > 0 else { return }  // nothing (or EINTR): the watch reports again
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 512) { buffer in
                    for token in ready.prefix(Int(count)) {
                        if token == Self.wakeToken {
                            while read(wakeRead, buffer.baseAddress, buffer.count) > 0 {}
                        } else if drain(token, into: buffer, pipes: &pipes) {
                            end(token, in: &pipes, flush: true)
                        }
                    }
                }
            }
        }
        try? arm()
    }

    /// Reads what the pipe holds, at most 16 buffers at a time, so that one child that floods
    /// its pipe cannot starve the others (epoll reports it again in the next round). True at EOF
    /// or on an error.
    private func drain(_ token: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, pipes: inout [UInt64: Pipe])
        -> Bool
    {
        guard let fd = pipes[token]?.fd else { return false }
        var reads = 0
        while reads < 16 {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                reads += 1
                guard var pipe = pipes[token] else { return true }
                for line in pipe.framer.feed(buffer[0..<n]) { pipe.continuation.yield(line) }
                pipes[token] = pipe
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return n == 0 || errno != EAGAIN
        }
        return false
    }

    private func end(_ token: UInt64, in pipes: inout [UInt64: Pipe], flush: Bool) {
        guard var pipe = pipes.removeValue(forKey: token) else { return }
        if flush && pipe.framer.pendingBytes > 0 {
            for line in pipe.framer.feed([UInt8(ascii: "\n")]) { pipe.continuation.yield(line) }
        }
        // Before the close, so that no registration outlives its descriptor in another's hands
        // (a file still open through a duplicate would otherwise stay registered).
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, pipe.fd, nil)
        close(pipe.fd)
        pipe.continuation.finish()
    }
}
