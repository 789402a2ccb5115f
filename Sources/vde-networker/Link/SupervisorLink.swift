import Dispatch
import Logging
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's side of the JSON-lines link: requests from stdin, replies and events to stdout.
///
/// stdout carries nothing but protocol lines (logs go to stderr). All lines go through one serial
/// queue, so they never interleave, and a supervisor that stops reading blocks only that queue.
final class SupervisorLink: Sendable {
    private let output: Int32
    private let writeQueue = DispatchQueue(label: "vde-networker.stdout")
    private let logger: Logger
    private let broken = Mutex(false)

    init(output: Int32 = STDOUT_FILENO, logger: Logger) {
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
        let fd = output
        writeQueue.async { [self] in
            guard !broken.withLock({ $0 }) else { return }
            do throws(SystemCallError) {
                try FileSystem.writeAll(line, to: fd)
            } catch {
                // SIGPIPE is ignored, so a gone supervisor shows up here as EPIPE.
                logger.warning("cannot write to the supervisor (\(error.text)); dropping further messages")
                broken.withLock { $0 = true }
            }
        }
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
