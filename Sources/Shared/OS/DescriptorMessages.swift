import CLinux

#if canImport(Glibc)
    import Glibc
#endif

/// Messages with descriptors attached (`SCM_RIGHTS`) on a `SOCK_SEQPACKET` socket: how the
/// supervisor hands a new worker's pipes to the fork server, and gets the worker's pidfd back.
/// A seqpacket socket keeps each message whole and in order, so one request is one message.
public enum DescriptorMessages {
    /// The most descriptors one message carries.
    public static let maxDescriptors = 4

    /// One message: its bytes and the descriptors that came with it (close-on-exec, the
    /// receiver's to close).
    public struct Message: Sendable, Equatable {
        public var bytes: [UInt8]
        public var descriptors: [Int32]

        public init(bytes: [UInt8], descriptors: [Int32] = []) {
            self.bytes = bytes
            self.descriptors = descriptors
        }

        /// Closes the descriptors that came with the message.
        public func closeDescriptors() {
            for fd in descriptors { close(fd) }
        }
    }

    /// A connected pair of close-on-exec seqpacket sockets.
    public static func socketPair() throws(SystemCallError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard clinux_seqpacket_pair(&fds) == 0 else {
            throw .last("socketpair", "AF_UNIX SOCK_SEQPACKET")
        }
        return (fds[0], fds[1])
    }

    /// Sends `message` on `socket` (never raising SIGPIPE: a closed peer is EPIPE).
    public static func send(_ message: Message, on socket: Int32) throws(SystemCallError) {
        precondition(message.descriptors.count <= maxDescriptors)
        let sent = message.bytes.withUnsafeBytes { bytes in
            message.descriptors.withUnsafeBufferPointer { fds in
                clinux_send_with_fds(socket, bytes.baseAddress, bytes.count, fds.baseAddress, Int32(fds.count))
            }
        }
        guard sent == message.bytes.count else {
            throw sent < 0
                ? .last("sendmsg", "fd \(socket)")
                : SystemCallError(call: "sendmsg", subject: "fd \(socket)", errno: EMSGSIZE)
        }
    }

    /// Receives one message of at most `capacity` bytes from `socket`; nil at the end of input
    /// (the peer closed its end). A longer message, or one with more descriptors, is refused
    /// with EMSGSIZE and its descriptors closed.
    public static func receive(on socket: Int32, capacity: Int) throws(SystemCallError) -> Message? {
        var bytes = [UInt8](repeating: 0, count: capacity)
        var fds = [Int32](repeating: -1, count: maxDescriptors)
        var count: Int32 = 0
        let received = bytes.withUnsafeMutableBytes { buffer in
            clinux_receive_with_fds(socket, buffer.baseAddress, buffer.count, &fds, &count)
        }
        guard received >= 0 else { throw .last("recvmsg", "fd \(socket)") }
        let descriptors = Array(fds.prefix(Int(count)))
        if received == 0 && descriptors.isEmpty { return nil }
        return Message(bytes: Array(bytes.prefix(received)), descriptors: descriptors)
    }

    /// Waits up to `timeout` for `socket` to be readable; false on timeout.
    public static func waitReadable(_ socket: Int32, timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = max(0, (deadline - ContinuousClock.now).milliseconds)
            var entry = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(clamping: left))
            if ready > 0 { return true }
            if ready == 0 || errno != EINTR { return false }
        }
    }
}
