/// One record of a capture stream: the switch's capture plugin writes them to its worker, and
/// the worker writes them to the capture command, both over unix stream sockets.
///
/// A stream, not datagrams: this kernel queues at most `net.unix.max_dgram_qlen` (10 here)
/// datagrams per unix socket, far too few for a burst, while a stream socket buffers by bytes
/// (its sender's `SO_SNDBUF`, up to 4 MiB). A record is sent with one non-blocking `send`; a
/// record shorter than one socket buffer goes out whole or not at all (``maxCapturedLength``),
/// so a full socket drops whole records and the stream stays framed.
///
/// Layout, little-endian, 24 bytes of header and then `capturedLength` bytes:
///
/// | offset | type | field |
/// |---|---|---|
/// | 0 | u16 | kind: 1 frame, 2 end |
/// | 2 | u16 | flags: bit 0, the endpoint sent the frame (endpoint captures only) |
/// | 4 | i32 | the switch port the frame entered on; -1 when not known |
/// | 8 | u32 | capturedLength: bytes that follow |
/// | 12 | u32 | originalLength: the frame's length on the wire |
/// | 16 | i64 | time, nanoseconds since the epoch (CLOCK_REALTIME) |
///
/// An end record (the last one a worker sends) carries u64 frames, u64 dropped and then the
/// reason the capture ended as UTF-8 (empty when its command ended it).
///
/// The switch plugin (`vde-switch-plugin/vde_capture.c`) writes frame records with the same layout.
public struct CaptureRecord: Sendable, Equatable {
    public static let headerLength = 24
    /// No Ethernet frame on a vde_switch is longer (it drops frames above 1518 bytes); anything
    /// longer is a broken stream.
    public static let maxCapturedLength = 65_535

    public enum Kind: UInt16, Sendable {
        case frame = 1
        case end = 2
    }

    public static let outgoingFlag: UInt16 = 1

    public var kind: Kind
    public var flags: UInt16
    public var port: Int32
    public var originalLength: UInt32
    public var timestampNanoseconds: Int64
    public var payload: [UInt8]

    public init(
        kind: Kind = .frame, flags: UInt16 = 0, port: Int32 = -1, originalLength: UInt32? = nil,
        timestampNanoseconds: Int64, payload: [UInt8]
    ) {
        self.kind = kind
        self.flags = flags
        self.port = port
        self.originalLength = originalLength ?? UInt32(payload.count)
        self.timestampNanoseconds = timestampNanoseconds
        self.payload = payload
    }

    /// The end record of a capture: its counters and why it ended.
    public static func end(frames: UInt64, dropped: UInt64, reason: String, timestampNanoseconds: Int64)
        -> CaptureRecord
    {
        var payload: [UInt8] = []
        payload.appendLittleEndian(frames)
        payload.appendLittleEndian(dropped)
        payload += Array(reason.utf8.prefix(4096))
        return CaptureRecord(kind: .end, timestampNanoseconds: timestampNanoseconds, payload: payload)
    }

    /// For an end record: frames, dropped and reason.
    public var endCounters: (frames: UInt64, dropped: UInt64, reason: String)? {
        guard kind == .end, payload.count >= 16 else { return nil }
        return (
            payload.readLittleEndian(UInt64.self, at: 0), payload.readLittleEndian(UInt64.self, at: 8),
            String(decoding: payload[16...], as: UTF8.self)
        )
    }

    public var isOutgoing: Bool { flags & Self.outgoingFlag != 0 }

    /// Header and payload, ready for one `send`.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.headerLength + payload.count)
        out.appendLittleEndian(kind.rawValue)
        out.appendLittleEndian(flags)
        out.appendLittleEndian(UInt32(bitPattern: port))
        out.appendLittleEndian(UInt32(payload.count))
        out.appendLittleEndian(originalLength)
        out.appendLittleEndian(UInt64(bitPattern: timestampNanoseconds))
        out += payload
        return out
    }
}

/// Cuts a capture stream into records as bytes arrive (any split).
public struct CaptureRecordReader: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    public init() {}

    /// Bytes held that do not yet make a whole record.
    public var pendingBytes: Int { buffer.count - start }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole record, nil when more bytes are needed; throws on a broken stream
    /// (unknown kind, a length above ``CaptureRecord/maxCapturedLength``).
    public mutating func next() throws(VDEError) -> CaptureRecord? {
        guard buffer.count - start >= CaptureRecord.headerLength else { return nil }
        let rawKind = buffer.readLittleEndian(UInt16.self, at: start)
        guard let kind = CaptureRecord.Kind(rawValue: rawKind) else {
            throw .system("capture stream: unknown record kind \(rawKind)")
        }
        let length = Int(buffer.readLittleEndian(UInt32.self, at: start + 8))
        guard length <= CaptureRecord.maxCapturedLength else {
            throw .system("capture stream: a record of \(length) bytes is longer than any frame")
        }
        guard buffer.count - start >= CaptureRecord.headerLength + length else { return nil }
        let payloadStart = start + CaptureRecord.headerLength
        let record = CaptureRecord(
            kind: kind, flags: buffer.readLittleEndian(UInt16.self, at: start + 2),
            port: Int32(bitPattern: buffer.readLittleEndian(UInt32.self, at: start + 4)),
            originalLength: buffer.readLittleEndian(UInt32.self, at: start + 12),
            timestampNanoseconds: Int64(bitPattern: buffer.readLittleEndian(UInt64.self, at: start + 16)),
            payload: Array(buffer[payloadStart..<(payloadStart + length)]))
        start = payloadStart + length
        if start > 1 << 16 {
            buffer.removeFirst(start)
            start = 0
        }
        return record
    }
}

extension Array where Element == UInt8 {
    fileprivate mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    fileprivate func readLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value = T.zero
        for index in 0..<MemoryLayout<T>.size { value |= T(self[offset + index]) << (8 * index) }
        return value
    }
}
