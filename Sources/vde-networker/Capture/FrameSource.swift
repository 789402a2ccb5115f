import CLinux
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Where an endpoint capture's frames come from: a descriptor the capture thread waits on, read
/// without blocking. The real one is a ``PacketSocket``; the unit tests use a socket pair.
protocol FrameSource: AnyObject, Sendable {
    var fd: Int32 { get }
    /// The next frame waiting, nil when none does; throws when the source broke (its
    /// interface left the namespace, for one).
    func nextFrame() throws(SystemCallError) -> CaptureRecord?
    /// Frames the kernel lost since the last call (the source's buffer was full).
    func takeDrops() -> UInt64
    func close()
}

/// An `AF_PACKET` socket bound to one endpoint's interface inside the container's network
/// namespace (the host's while the endpoint has not joined one): it sees both directions of
/// the interface, each frame once, with the kernel's time stamp and its direction.
///
/// Made there by a thread that enters the namespace and ends (clinux_packet_open): setns
/// changes only the calling thread, and a socket stays in the namespace it was made in. The
/// interface is found by the endpoint's MAC address because dockerd renames the tap inside
/// (to `eth0`, ...). Unchecked Sendable: only the capture thread reads it (and its buffer).
final class PacketSocket: FrameSource, @unchecked Sendable {
    /// No frame on a vde_switch is longer than 1518 bytes; a tap without offloads gets none
    /// longer than its MTU. Longer ones (a jumbo MTU) are cut here, with their real length kept.
    static let capacity = 65_535

    let fd: Int32
    let ifindex: Int32
    private let buffer: UnsafeMutablePointer<UInt8>
    private let closed = OnceFlag()

    private init(fd: Int32, ifindex: Int32) {
        self.fd = fd
        self.ifindex = ifindex
        buffer = .allocate(capacity: Self.capacity)
    }

    deinit { buffer.deallocate() }

    /// Blocks for the thread that enters the namespace: call it through ``Blocking``.
    static func open(namespace: String?, macAddress: MACAddress) throws(CaptureError) -> PacketSocket {
        let mac = macAddress.bytes
        var fd: Int32 = -1
        var ifindex: Int32 = 0
        var step: UnsafePointer<CChar>?
        let code = mac.withUnsafeBufferPointer { macBytes in
            if let namespace {
                return namespace.withCString { clinux_packet_open($0, macBytes.baseAddress, &fd, &ifindex, &step) }
            }
            return clinux_packet_open(nil, macBytes.baseAddress, &fd, &ifindex, &step)
        }
        guard code == 0 else {
            let place = namespace.map { "the network namespace \($0)" } ?? "the host's network namespace"
            let what = step.map { String(cString: $0) } ?? "open"
            if code == ENODEV {
                throw CaptureError(
                    vdeError: .notFound(
                        "no interface with the MAC address \(macAddress) in \(place): the endpoint's tap is not there"))
            }
            throw CaptureError(
                vdeError: .system(
                    "cannot open a packet socket on the interface \(macAddress) in \(place): \(what): \(SystemCallError.text(code))"
                ))
        }
        return PacketSocket(fd: fd, ifindex: ifindex)
    }

    func nextFrame() throws(SystemCallError) -> CaptureRecord? {
        var length: UInt = 0
        var outgoing: Int32 = 0
        var from: Int32 = 0
        var nanoseconds: Int64 = 0
        while true {
            let stored = clinux_packet_recv(fd, buffer, UInt(Self.capacity), &length, &outgoing, &from, &nanoseconds)
            if stored < 0 {
                switch errno {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK: return nil
                default: throw .last("recvmsg", "packet socket")
                }
            }
            // Bound to one interface; frames of others queued before the bind are skipped.
            guard from == ifindex else { continue }
            return CaptureRecord(
                flags: outgoing != 0 ? CaptureRecord.outgoingFlag : 0, port: -1,
                originalLength: UInt32(clamping: length), timestampNanoseconds: nanoseconds,
                payload: Array(UnsafeBufferPointer(start: buffer, count: stored)))
        }
    }

    func takeDrops() -> UInt64 {
        let drops = clinux_packet_drops(fd)
        return drops > 0 ? UInt64(drops) : 0
    }

    func close() {
        guard closed.claim() else { return }
        Glibc.close(fd)
    }
}
