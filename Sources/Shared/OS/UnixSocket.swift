import CLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A connected unix socket (stream or datagram) with a deadline on every step: the one place
/// that builds a `sockaddr_un` and connects. The owner closes it with ``close()``.
public struct UnixSocket: Sendable {
    public enum Kind: Sendable {
        case stream, datagram

        var rawValue: Int32 {
            switch self {
            case .stream: Int32(SOCK_STREAM.rawValue)
            case .datagram: Int32(SOCK_DGRAM.rawValue)
            }
        }
    }

    /// The descriptor (non-blocking, close-on-exec).
    public let fd: Int32
    /// The path it is connected to, for messages.
    public let path: String

    /// Takes over `fd`, a connected unix socket (one that ``UnixListener`` accepted); it is made
    /// non-blocking, which ``send(_:deadline:)`` and ``receive(maximum:deadline:)`` expect.
    public init(adopting fd: Int32, path: String) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        self.fd = fd
        self.path = path
    }

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Connects to `path`, waiting at most until `deadline` for a busy listener to accept.
    /// A timeout throws ETIMEDOUT (from `connect`).
    public static func connect(
        to path: String, kind: Kind = .stream,
        deadline: ContinuousClock.Instant
    ) throws(SystemCallError) -> UnixSocket {
        let fd = try open(kind: kind, path: path)
        let code = attempt(fd, path: path)
        if code == 0 { return UnixSocket(fd: fd, path: path) }
        guard code == EINPROGRESS || code == EAGAIN else {
            Glibc.close(fd)
            throw SystemCallError(call: "connect", subject: path, errno: code)
        }
        guard wait(fd, for: POLLOUT, until: deadline) else {
            Glibc.close(fd)
            throw SystemCallError(call: "connect", subject: path, errno: ETIMEDOUT)
        }
        var socketError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
        guard socketError == 0 else {
            Glibc.close(fd)
            throw SystemCallError(call: "connect", subject: path, errno: socketError)
        }
        return UnixSocket(fd: fd, path: path)
    }

    /// ``connect(to:kind:deadline:)`` with a time limit.
    public static func connect(to path: String, kind: Kind = .stream, timeout: Duration) throws(SystemCallError)
        -> UnixSocket
    {
        try connect(to: path, kind: kind, deadline: .now + timeout)
    }

    /// What a single non-blocking connect to `path` says, without waiting: 0 when it connected or
    /// is pending (something listens, maybe busy), else the errno (ECONNREFUSED: a socket file
    /// nobody listens on; ENOENT: no socket; EPROTOTYPE: a socket of the other kind).
    public static func probe(_ path: String, kind: Kind = .stream) -> Int32 {
        guard let fd = try? open(kind: kind, path: path) else { return errno }
        defer { Glibc.close(fd) }
        let code = attempt(fd, path: path)
        return code == EINPROGRESS || code == EAGAIN ? 0 : code
    }

    /// True when something accepts stream connections at `path`.
    public static func answers(_ path: String) -> Bool { probe(path) == 0 }

    /// Sends all of `bytes` (no SIGPIPE: a closed peer is EPIPE), waiting for room until `deadline`.
    public func send(_ bytes: [UInt8], deadline: ContinuousClock.Instant) throws(SystemCallError) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress.map { $0 + sent }, $0.count - sent, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                sent += n
                continue
            }
            let code = n < 0 ? errno : EPIPE
            if code == EINTR { continue }
            guard code == EAGAIN || code == EWOULDBLOCK else {
                throw SystemCallError(call: "send", subject: path, errno: code)
            }
            guard Self.wait(fd, for: POLLOUT, until: deadline) else {
                throw SystemCallError(call: "send", subject: path, errno: ETIMEDOUT)
            }
        }
    }

    /// Receives what has arrived, up to `maximum` bytes, waiting until `deadline` for something;
    /// an empty result is the end of the stream. A timeout throws ETIMEDOUT.
    public func receive(maximum: Int = 16384, deadline: ContinuousClock.Instant) throws(SystemCallError) -> [UInt8] {
        while true {
            // Not zero-filled first: a management reply's 64 kB buffer, zeroed, was 16 pages
            // faulted in for a reply of a few dozen bytes (14 of a worker's 135 page faults in
            // `docker network create`, perf record -e minor-faults).
            var code: Int32 = 0
            let received = [UInt8](unsafeUninitializedCapacity: maximum) { buffer, count in
                let n = recv(fd, buffer.baseAddress, buffer.count, 0)
                count = max(n, 0)
                code = n < 0 ? errno : 0
            }
            if code == 0 { return received }
            if code == EINTR { continue }
            guard code == EAGAIN || code == EWOULDBLOCK else {
                throw SystemCallError(call: "recv", subject: path, errno: code)
            }
            guard Self.wait(fd, for: POLLIN, until: deadline) else {
                throw SystemCallError(call: "recv", subject: path, errno: ETIMEDOUT)
            }
        }
    }

    /// Receives until `isComplete` says what arrived is a whole message, or the peer ends the
    /// stream (the caller checks what it got), all before `deadline` (else ETIMEDOUT). More than
    /// `limit` bytes throw EMSGSIZE.
    public func receiveMessage(
        deadline: ContinuousClock.Instant, limit: Int,
        isComplete: ([UInt8]) -> Bool = { _ in false }
    ) throws(SystemCallError) -> [UInt8] {
        var received: [UInt8] = []
        while true {
            let chunk = try receive(maximum: 65536, deadline: deadline)
            if chunk.isEmpty { return received }
            received.append(contentsOf: chunk)
            if isComplete(received) { return received }
            if received.count > limit { throw SystemCallError(call: "recv", subject: path, errno: EMSGSIZE) }
        }
    }

    /// Half a close: the peer reads the end of the stream, and this side can still read.
    public func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    public func close() { Glibc.close(fd) }

    // MARK: Internals

    private static func open(kind: Kind, path: String) throws(SystemCallError) -> Int32 {
        let fd = socket(AF_UNIX, kind.rawValue | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .last("socket", path) }
        return fd
    }

    /// One connect; 0 or the errno (ENAMETOOLONG for a path that does not fit `sun_path`).
    private static func attempt(_ fd: Int32, path: String) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return ENAMETOOLONG }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        while true {
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if result == 0 { return 0 }
            if errno != EINTR { return errno }
        }
    }

    /// Waits for `events` on `fd` until `deadline`; false on timeout or error.
    static func wait(_ fd: Int32, for events: Int32, until deadline: ContinuousClock.Instant) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(events), revents: 0)
        while true {
            let remaining = deadline - .now
            // Rounded up, so that a wait short of a millisecond still waits.
            let n = poll(&descriptor, 1, remaining <= .zero ? 0 : Int32(clamping: remaining.milliseconds + 1))
            if n < 0 && errno == EINTR { continue }
            return n > 0
        }
    }
}
