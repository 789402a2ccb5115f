import CLinux
import Logging
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's side of one JSON-lines link to a supervisor: requests in, replies and events out.
///
/// The first link is the worker's stdin and stdout (pipes from the supervisor that spawned it);
/// later ones are connections accepted on the worker's socket (``LinkServer``), one socket both
/// ways. The output carries nothing but protocol lines (logs go to stderr). Lines leave in the
/// order they were sent and never interleave: a line is written by its sender when nothing
/// waits before it and the output takes it whole; otherwise it (or its rest) goes to one
/// writer task, which waits in the ``DescriptorWatcher`` while a supervisor does not read. (A
/// thread of its own for these writes cost every worker about 20 kB: docs/benchmarks.md,
/// "The fork server".)
final class SupervisorLink: Sendable {
    enum Output: Sendable {
        /// A pipe (stdout); made non-blocking.
        case pipe(Int32)
        /// A connected (non-blocking) socket; a supervisor that reads nothing for `sendLimit` is dropped.
        case socket(UnixSocket)
    }

    /// What the writer task does, in order.
    private enum Item: Sendable {
        case line([UInt8])
        /// Everything before has been written (or dropped).
        case flushed(@Sendable () -> Void)
        /// Drop further lines and close a socket.
        case close
    }

    /// How long one line may wait for a socket supervisor to read.
    static let sendLimit: Duration = .seconds(30)

    private let output: Output
    private let outbox: AsyncStream<Item>.Continuation
    private let logger: Logger
    private let closed = OnceFlag()
    /// Shared by senders and the writer task.
    private let state = SharedState()

    private final class SharedState: Sendable {
        let mutex = Mutex(WriteState())
        func withLock<R>(_ body: (inout WriteState) -> R) -> R { mutex.withLock { body(&$0) } }
    }

    private struct WriteState {
        /// Lines given to the writer task and not yet written (or dropped) by it.
        var queued = 0
        /// A write failed (the supervisor is gone) or the link was closed: lines are dropped.
        var broken = false
        /// ``close()`` was called: lines sent from then on are dropped.
        var closing = false
    }

    init(output: Output = .pipe(STDOUT_FILENO), logger: Logger) {
        self.output = output
        self.logger = logger
        if case .pipe(let fd) = output { _ = clinux_set_nonblocking(fd) }
        let (items, outbox) = AsyncStream<Item>.makeStream()
        self.outbox = outbox
        let state = self.state
        Task { await Self.write(items, to: output, state: state, logger: logger) }
    }

    /// The writer: one line at a time; after a write error (SIGPIPE is ignored and sockets are
    /// non-blocking, so a gone supervisor shows up as EPIPE) the rest are dropped.
    private static func write(
        _ items: AsyncStream<Item>, to output: Output, state: SharedState, logger: Logger
    ) async {
        for await item in items {
            switch item {
            case .line(let bytes):
                defer { state.withLock { $0.queued -= 1 } }
                guard !state.withLock({ $0.broken }) else { continue }
                do throws(SystemCallError) {
                    switch output {
                    case .pipe(let fd): try await DescriptorWatcher.writeAll(bytes, to: fd)
                    case .socket(let socket):
                        // Most lines go out at once; only a supervisor that does not read gets
                        // the time limit (a timer of `sendLimit` per line would wake every
                        // idle worker that long after each reply).
                        let sent = try DescriptorWatcher.writeWithoutWaiting(bytes[...], to: socket.fd)
                        guard sent < bytes.count else { break }
                        let rest = bytes[sent...]
                        let written = await Timeout.run(sendLimit) { () async -> SystemCallError? in
                            do throws(SystemCallError) {
                                try await DescriptorWatcher.writeAll(rest, to: socket.fd)
                                return nil
                            } catch {
                                return error
                            }
                        }
                        switch written {
                        case .none:
                            throw SystemCallError(
                                call: "send", subject: "the supervisor's socket (nothing read for \(sendLimit))",
                                errno: ETIMEDOUT)
                        case .some(.some(let error)): throw error
                        case .some(.none): break
                        }
                    }
                } catch {
                    logger.warning("cannot write to the supervisor (\(error.text)); dropping further messages")
                    state.withLock { $0.broken = true }
                }
            case .flushed(let done): done()
            case .close:
                state.withLock { $0.broken = true }
                if case .socket(let socket) = output { socket.close() }
            }
        }
    }

    private var descriptor: Int32 {
        switch output {
        case .pipe(let fd): fd
        case .socket(let socket): socket.fd
        }
    }

    /// Lines from `input` until EOF, read by the process's pipe poller (``PipeLines``),
    /// so that no cooperative thread ever blocks on it. `input` is closed at EOF. Throws when
    /// that thread cannot be set up (no file descriptors left).
    static func incoming(from input: Int32 = STDIN_FILENO, maxLineBytes: Int = WorkerProtocol.maxLineBytes)
        throws(PipeLines.OpenError) -> AsyncMapSequence<AsyncStream<LineFramer.Line>, IncomingLine>
    {
        try PipeLines.lines(from: input, maxLineBytes: maxLineBytes).map { line in
            switch line {
            case .line(let bytes): IncomingLine.decode(bytes)
            case .oversized(let length): .oversized(length: length)
            }
        }
    }

    /// Sends one message; lines leave in the order `send` was called.
    ///
    /// Written here, at once, when no line waits for the writer task and the output takes it
    /// whole. Through the task, a reply waited for every job queued before it on the worker's one
    /// thread: the `start` reply 0.35 ms (median of 21) behind the threads that the new switch's
    /// check (a probe then, a management exchange now) and port watch start.
    func send(_ message: WorkerMessage) {
        let line: [UInt8]
        do {
            line = try JSONCoding.encode(message) + [UInt8(ascii: "\n")]
        } catch {
            logger.error("cannot encode a message for the supervisor: \(error)")
            return
        }
        let fd = descriptor
        let failure: SystemCallError? = state.withLock { state in
            guard !state.broken, !state.closing else { return nil }
            var rest = line[...]
            if state.queued == 0 {
                do throws(SystemCallError) {
                    let sent = try DescriptorWatcher.writeWithoutWaiting(rest, to: fd)
                    guard sent < rest.count else { return nil }
                    rest = rest[(rest.startIndex + sent)...]
                } catch {
                    state.broken = true
                    return error
                }
            }
            // Under the lock: a later sender finds `queued` above 0 and queues behind it.
            state.queued += 1
            if case .terminated = outbox.yield(.line(Array(rest))) { state.queued -= 1 }
            return nil
        }
        if let failure {
            logger.warning("cannot write to the supervisor (\(failure.text)); dropping further messages")
        }
    }

    /// Drops further messages and, for a socket, closes it once the messages queued so far are
    /// written. Idempotent.
    func close() {
        guard closed.claim() else { return }
        state.withLock { state in
            state.closing = true
            outbox.yield(.close)
            outbox.finish()
        }
    }

    /// Returns once every message queued so far has been written, or after `timeout` (a
    /// supervisor that neither reads nor closes its end must not keep the worker from exiting).
    func flush(timeout: Duration = .seconds(2)) async {
        let done = OnceFlag()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let finish: @Sendable () -> Void = { if done.claim() { continuation.resume() } }
            // After close() the writer has ended or will end: nothing more to wait for.
            if case .terminated = outbox.yield(.flushed(finish)) { finish() }
            Timeout.after(timeout) { finish() }
        }
    }
}
