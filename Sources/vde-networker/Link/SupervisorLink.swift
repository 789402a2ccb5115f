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
/// ways. The output carries nothing but protocol lines (logs go to stderr). All lines go
/// through one ``ThreadQueue``, so they never interleave, and a supervisor that stops reading
/// blocks only that queue's thread.
final class SupervisorLink: Sendable {
    enum Output: Sendable {
        /// A pipe (stdout), written with blocking writes.
        case pipe(Int32)
        /// A connected socket; a supervisor that reads nothing for `sendLimit` is dropped.
        case socket(UnixSocket)
    }

    /// How long one line may wait for a socket supervisor to read.
    static let sendLimit: Duration = .seconds(30)

    private let output: Output
    private let writeQueue = ThreadQueue()
    private let logger: Logger
    private let broken = Mutex(false)
    private let closed = OnceFlag()

    init(output: Output = .pipe(STDOUT_FILENO), logger: Logger) {
        self.output = output
        self.logger = logger
    }

    /// Lines from `input` until EOF, read by the process's pipe-reading thread (``PipeLines``),
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

    /// Queues one message; lines leave in the order `send` was called.
    func send(_ message: WorkerMessage) {
        let line: [UInt8]
        do {
            line = try JSONCoding.encode(message) + [UInt8(ascii: "\n")]
        } catch {
            logger.error("cannot encode a message for the supervisor: \(error)")
            return
        }
        let output = output
        writeQueue.async { [self] in
            guard !broken.withLock({ $0 }) else { return }
            do throws(SystemCallError) {
                switch output {
                case .pipe(let fd): try FileSystem.writeAll(line, to: fd)
                case .socket(let socket): try socket.send(line, deadline: .now + Self.sendLimit)
                }
            } catch {
                // SIGPIPE is ignored (and sockets send with MSG_NOSIGNAL), so a gone supervisor
                // shows up here as EPIPE.
                logger.warning("cannot write to the supervisor (\(error.text)); dropping further messages")
                broken.withLock { $0 = true }
            }
        }
    }

    /// Drops further messages and, for a socket, closes it once the messages queued so far are
    /// written. Idempotent.
    func close() {
        guard closed.claim() else { return }
        let output = output
        writeQueue.async { [self] in
            broken.withLock { $0 = true }
            if case .socket(let socket) = output { socket.close() }
        }
        writeQueue.finish()
    }

    /// Returns once every message queued so far has been written, or after `timeout` (a
    /// supervisor that neither reads nor closes its end must not keep the worker from exiting).
    func flush(timeout: Duration = .seconds(2)) async {
        let done = OnceFlag()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            writeQueue.async { if done.claim() { continuation.resume() } }
            Timeout.after(timeout) { if done.claim() { continuation.resume() } }
        }
    }
}
