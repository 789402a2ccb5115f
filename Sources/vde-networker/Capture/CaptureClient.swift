import CLinux
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// One capture as the capture thread runs it: its one-shot listening socket until the capture
/// command connects, then that connection, its counters and (for an endpoint) its frame source.
struct CaptureClient {
    /// Each client connection may queue this much before its frames are dropped: a burst of
    /// about 2700 full-size frames (wmem_max is 4 MiB here; as root SO_SNDBUFFORCE goes past it).
    static let sendBuffer: Int32 = 4 << 20

    enum Outcome: Equatable {
        case sent, dropped
        /// Dropped, and the socket is full: wait for it to be writable (``isFull``).
        case full
        /// The connection is gone or its stream broke: end the capture without an end record.
        case broken(String)
    }

    var spec: CaptureSpec
    var startedAt: Int64
    /// Until the command connects; closed (and its path unlinked) once it did.
    var listener: UnixListener?
    /// When an unconnected capture is forgotten.
    var connectDeadline: ContinuousClock.Instant
    var connection: Int32 = -1
    var clientPID: Int32?
    var clientUID: UInt32?
    var frames: UInt64 = 0
    var dropped: UInt64 = 0
    /// Frames of the switch's capture plugin dropped before this capture began (segment only):
    /// the plugin's own counter minus this is what the capture lost there.
    var pluginDropsBase: UInt64 = 0
    var source: (any FrameSource)?
    /// Set once the capture is ending: the rest of the end record to send, and until when.
    var pendingEnd: [UInt8]?
    var endDeadline: ContinuousClock.Instant?
    /// A send found the socket full: until epoll reports it writable again (a unix stream
    /// socket is writable once three quarters of its buffer are free), records are dropped and
    /// counted without a system call each. Measured with a reader that never reads: without
    /// this, every frame of the segment cost a failing `send`.
    var isFull = false

    var isSegment: Bool { spec.endpointID == nil }
    var isConnected: Bool { connection >= 0 }

    func status(extraDrops: UInt64 = 0) -> CaptureStatus {
        CaptureStatus(
            id: spec.id, endpointID: spec.endpointID, filter: spec.filter, startedAt: startedAt, clientPID: clientPID,
            clientUID: clientUID, frames: frames, dropped: dropped + extraDrops)
    }

    /// One non-blocking send of a whole record: it goes whole (a record is far smaller than the
    /// socket's buffer) or not at all, in which case it is dropped and counted. Never waits.
    mutating func deliver(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        guard connection >= 0, pendingEnd == nil else { return .dropped }
        if isFull {
            dropped += 1
            return .dropped
        }
        let sent = send(connection, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        if sent == bytes.count {
            frames += 1
            return .sent
        }
        if sent < 0 {
            switch errno {
            case EAGAIN, EWOULDBLOCK, ENOBUFS:
                dropped += 1
                isFull = true
                return .full
            default:
                return .broken("send: \(SystemCallError.text(errno))")
            }
        }
        // Part of a record would break the stream's framing: end rather than send garbage.
        dropped += 1
        return .broken("a record was cut short (\(sent) of \(bytes.count) bytes)")
    }

    /// Sends what is left of the end record without waiting. True once it is all out, or when it
    /// never can be (the connection broke).
    mutating func flushEnd() -> Bool {
        guard var rest = pendingEnd, connection >= 0 else { return true }
        while !rest.isEmpty {
            let sent = rest.withUnsafeBytes {
                send(connection, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    pendingEnd = rest
                    return false
                }
                return true
            }
            rest.removeFirst(sent)
        }
        pendingEnd = []
        return true
    }

    /// Closes everything the capture holds (the listener's path is unlinked).
    mutating func close() {
        listener?.close()
        listener = nil
        if connection >= 0 { Glibc.close(connection) }
        connection = -1
        source?.close()
        source = nil
    }
}
