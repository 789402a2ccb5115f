import CPcap
import Glibc
import Shared

/// Reads one capture's records from the worker's socket and hands each frame that passes the
/// filter to the output, until the capture ends: `-c` frames written, `--duration` over,
/// SIGINT/SIGTERM, the reader of stdout gone, or the worker ending it.
///
/// Ending it from here is half a close: `shutdown(SHUT_WR)` tells the worker, which answers
/// with the end record (its frame and drop counts) and closes; frames still in flight are
/// read and counted as seen, not written. A worker that sends no end record within
/// ``drainSeconds`` (gone, or not answering) does not keep the command: it ends without the counts.
final class CaptureStream {
    static let drainSeconds = 5
    static let readSize = 1 << 18

    enum Sink {
        case pcap(PcapWriter)
        /// Summary lines to stdout.
        case summary(utcOffset: Int)

        var writesStdout: Bool {
            switch self {
            case .pcap(let writer): writer.destination == "stdout"
            case .summary: true
            }
        }
    }

    struct Outcome: Equatable {
        /// Frames written (passed the filter, within `-c`).
        var captured: UInt64 = 0
        /// Frames read from the worker.
        var received: UInt64 = 0
        /// The end record's counters and reason; nil when none came.
        var end: (frames: UInt64, dropped: UInt64, reason: String)? = nil
        /// What ended it from this side (`-c 10 reached`, `interrupted`...); nil: the worker did.
        var stoppedBy: String? = nil
        /// An error that ended the capture (not the reader of stdout going away).
        var failure: String? = nil

        static func == (a: Outcome, b: Outcome) -> Bool {
            a.captured == b.captured && a.received == b.received && a.stoppedBy == b.stoppedBy
                && a.failure == b.failure && a.end?.frames == b.end?.frames && a.end?.dropped == b.end?.dropped
                && a.end?.reason == b.end?.reason
        }

        /// `12 frames captured (40 seen), 0 dropped`: seen is what the worker handed over (its
        /// end record's count), before the filter.
        var summary: String {
            let seen = end?.frames ?? received
            let dropped = end.map { "\($0.dropped) dropped" } ?? "drops unknown (the worker sent no end record)"
            return "\(captured) frame\(captured == 1 ? "" : "s") captured (\(seen) seen), \(dropped)"
        }
    }

    private let socket: UnixSocket
    private let arguments: CaptureArguments
    private let filter: PcapFilter?
    private let sink: Sink
    private let endpointCapture: Bool
    private let signals: Int32?
    private var reader = CaptureRecordReader()
    private var outcome = Outcome()
    private var stopping = false
    private var drainDeadline: ContinuousClock.Instant?

    init(
        socket: UnixSocket, arguments: CaptureArguments, filter: PcapFilter?, sink: Sink, endpointCapture: Bool,
        signals: Int32?
    ) {
        self.socket = socket
        self.arguments = arguments
        self.filter = filter
        self.sink = sink
        self.endpointCapture = endpointCapture
        self.signals = signals
    }

    func run() -> Outcome {
        let deadline = arguments.durationMilliseconds.map { ContinuousClock.now + .milliseconds($0) }
        var buffer = [UInt8](repeating: 0, count: Self.readSize)
        while true {
            let now = ContinuousClock.now
            if !stopping, let deadline, now >= deadline {
                stop("--duration over")
            }
            if let drainDeadline, now >= drainDeadline { return outcome }
            let wake = [stopping ? nil : deadline, drainDeadline].compactMap { $0 }.min()
            let timeout = wake.map { Self.milliseconds($0 - now) } ?? -1
            var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)]
            if let signals { fds.append(pollfd(fd: signals, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), timeout)
            if ready < 0 {
                if errno == EINTR { continue }
                outcome.failure = "poll: \(SystemCallError.text(errno))"
                return outcome
            }
            if let signals, fds.count > 1, fds[1].revents != 0, !StopSignals.take(signals).isEmpty {
                // A second Ctrl-C while waiting for the end record: leave at once.
                if stopping { return outcome }
                stop("interrupted")
            }
            guard fds[0].revents != 0 else { continue }
            let count = recv(socket.fd, &buffer, buffer.count, 0)
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                if outcome.stoppedBy == nil { outcome.failure = "reading the capture: \(SystemCallError.text(errno))" }
                return outcome
            }
            if count == 0 { return outcome }
            reader.append(buffer[..<count])
            do {
                while let record = try reader.next() {
                    if record.kind == .end {
                        outcome.end = record.endCounters
                        return outcome
                    }
                    handle(record)
                }
            } catch {
                outcome.failure = error.message
                return outcome
            }
        }
    }

    private func handle(_ record: CaptureRecord) {
        outcome.received += 1
        guard !stopping else { return }
        let captured = min(record.payload.count, arguments.snaplen)
        let nanoseconds = record.timestampNanoseconds
        // With nanosecond precision, libpcap takes tv_usec as nanoseconds.
        var header = pcap_pkthdr(
            ts: timeval(tv_sec: Int(nanoseconds / 1_000_000_000), tv_usec: Int(nanoseconds % 1_000_000_000)),
            caplen: UInt32(captured), len: record.originalLength)
        let written: FrameResult = record.payload.withUnsafeBufferPointer { bytes in
            guard let base = bytes.baseAddress else { return .filtered }
            if let filter, !filter.matches(&header, base) { return .filtered }
            if sink.writesStdout, !stdoutTakesAFrame() { return .interrupted }
            switch sink {
            case .pcap(let writer):
                do throws(CaptureError) {
                    try writer.write(&header, base)
                } catch {
                    return .failed(error)
                }
            case .summary(let utcOffset):
                let line = FrameSummary.line(record, endpointCapture: endpointCapture, utcOffset: utcOffset) + "\n"
                do throws(SystemCallError) {
                    try FileSystem.writeAll(Array(line.utf8), to: 1)
                } catch {
                    if error.errno == EPIPE { return .failed(CaptureError("stdout closed", readerGone: true)) }
                    return .failed(CaptureError("cannot write to stdout: \(error.text)"))
                }
            }
            return .written
        }
        switch written {
        case .written:
            outcome.captured += 1
            if let limit = arguments.count, outcome.captured >= UInt64(limit) { stop("-c \(limit) reached") }
        case .filtered:
            break
        case .interrupted:
            stop("interrupted")
        case .failed(let error) where error.readerGone:
            stop("the reader of stdout went away")
        case .failed(let error):
            outcome.failure = error.message
            stop("an output error")
        }
    }

    private enum FrameResult {
        case written, filtered
        /// A stop signal came while stdout could not take the frame.
        case interrupted
        case failed(CaptureError)
    }

    /// Waits until stdout can take a frame, or a stop signal comes (false; the signal is taken).
    /// A reader that stopped reading (a full pipe) would otherwise block the write for ever:
    /// SIGINT/SIGTERM may reach another of the process's threads and leave the write blocked,
    /// and what stdio kept would block the exit again (measured: a capture with `-w -` into a
    /// pipe nobody read did not exit on SIGINT). A frame of a vde network (at most 1518 bytes
    /// and its 16-byte header) is below PIPE_BUF, so a pipe that polls writable takes it whole.
    private func stdoutTakesAFrame() -> Bool {
        guard let signals else { return true }
        while true {
            var fds = [
                pollfd(fd: 1, events: Int16(POLLOUT), revents: 0),
                pollfd(fd: signals, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&fds, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                return true
            }
            if fds[1].revents != 0, !StopSignals.take(signals).isEmpty { return false }
            // Writable, or broken (POLLERR: the reader is gone, which the write then reports).
            if fds[0].revents != 0 { return true }
        }
    }

    /// Ends the capture from this side: the worker answers with the end record.
    private func stop(_ why: String) {
        guard !stopping else { return }
        stopping = true
        outcome.stoppedBy = why
        socket.shutdownWrite()
        drainDeadline = .now + .seconds(Self.drainSeconds)
    }

    private static func milliseconds(_ duration: Duration) -> Int32 {
        let (seconds, attoseconds) = duration.components
        let total = seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1
        return Int32(clamping: max(0, total))
    }
}
