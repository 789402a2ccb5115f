/// Splits a byte stream into lines for the JSON-lines link, with a length limit.
///
/// Feed it chunks as they arrive; it returns complete lines (without the newline).
/// A line longer than `maxLineBytes` is discarded up to its newline and reported as
/// ``Line/oversized`` so that the reader can log it and carry on.
public struct LineFramer: Sendable {
    public enum Line: Sendable, Equatable {
        case line([UInt8])
        /// A line that exceeded the limit; `length` bytes were dropped.
        case oversized(length: Int)
    }

    public let maxLineBytes: Int
    private var buffer: [UInt8] = []
    private var discarding = false
    private var discarded = 0

    public init(maxLineBytes: Int = WorkerProtocol.maxLineBytes) {
        self.maxLineBytes = maxLineBytes
    }

    public mutating func feed(_ chunk: some Sequence<UInt8>) -> [Line] {
        var out: [Line] = []
        for byte in chunk {
            if byte == UInt8(ascii: "\n") {
                if discarding {
                    out.append(.oversized(length: discarded))
                    discarding = false
                    discarded = 0
                } else {
                    out.append(.line(buffer))
                }
                buffer.removeAll(keepingCapacity: true)
                continue
            }
            if discarding {
                discarded += 1
            } else if buffer.count >= maxLineBytes {
                discarding = true
                discarded = buffer.count + 1
                buffer.removeAll(keepingCapacity: false)
            } else {
                buffer.append(byte)
            }
        }
        return out
    }

    /// Bytes of an unfinished line held back (for end-of-stream diagnostics).
    public var pendingBytes: Int { discarding ? discarded : buffer.count }
}
