import Shared

/// Cuts the capture plugin's stream into whole frame records and hands each on as the plugin
/// wrote it, in place in the buffer just read: decoding each into a ``CaptureRecord`` and
/// encoding it again for every segment capture cost two allocations per frame. Only a record
/// cut by the end of a read is copied, and kept for the next one.
struct RecordFramer {
    /// The start of a record whose rest has not arrived yet.
    private(set) var pending: [UInt8] = []

    /// Calls `body` with each whole record in `chunk` (header and payload), in order. Returns
    /// what is wrong with a broken stream (a kind other than frame, a length above any frame);
    /// nothing more is handed on then.
    mutating func feed(_ chunk: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) -> String? {
        var offset = 0
        if !pending.isEmpty {
            let headerPart = min(max(CaptureRecord.headerLength - pending.count, 0), chunk.count)
            pending += chunk[0..<headerPart]
            offset = headerPart
            guard pending.count >= CaptureRecord.headerLength else { return nil }
            let total: Int
            switch pending.withUnsafeBytes({ Self.recordLength($0) }) {
            case .success(let length): total = length
            case .failure(let failure): return failure.reason
            }
            let rest = min(total - pending.count, chunk.count - offset)
            pending += chunk[offset..<(offset + rest)]
            offset += rest
            guard pending.count == total else { return nil }
            let record = pending
            pending = []
            record.withUnsafeBytes { body($0) }
        }
        while chunk.count - offset >= CaptureRecord.headerLength {
            let total: Int
            switch Self.recordLength(UnsafeRawBufferPointer(rebasing: chunk[offset...])) {
            case .success(let length): total = length
            case .failure(let failure): return failure.reason
            }
            guard chunk.count - offset >= total else { break }
            body(UnsafeRawBufferPointer(rebasing: chunk[offset..<(offset + total)]))
            offset += total
        }
        pending += chunk[offset...]
        return nil
    }

    struct BrokenStream: Error { var reason: String }

    /// Header and payload length of the frame record at the start of `bytes` (its header whole).
    static func recordLength(_ bytes: UnsafeRawBufferPointer) -> Result<Int, BrokenStream> {
        let kind = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        guard kind == CaptureRecord.Kind.frame.rawValue else {
            return .failure(BrokenStream(reason: "record kind \(kind) where frames were expected"))
        }
        let length = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        guard length <= CaptureRecord.maxCapturedLength else {
            return .failure(BrokenStream(reason: "a record of \(length) bytes is longer than any frame"))
        }
        return .success(CaptureRecord.headerLength + length)
    }
}
