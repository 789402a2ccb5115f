import Dispatch
import Glibc

/// An HTTP reply as read off the socket.
struct HTTPReply: Sendable, CustomStringConvertible {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    var bodyText: String { String(decoding: body, as: UTF8.self) }
    var isSuccess: Bool { (200..<300).contains(status) }
    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
    var description: String { "HTTP \(status) \(bodyText.prefix(2000))" }
}

/// A minimal HTTP/1.1 client over a unix stream socket, written on Glibc sockets so that it
/// can also send malformed bytes. One connection per request (`Connection: close`).
/// Blocking socket calls run on Dispatch threads, not on the Swift concurrency pool.
enum UnixHTTPClient {
    /// POSTs `body` to `path` like dockerd does (no Content-Type, plugin Accept header).
    static func post(socket: String, path: String, body: [UInt8], timeout: Duration = .seconds(60)) async throws
        -> HTTPReply
    {
        var head = "POST \(path) HTTP/1.1\r\n"
        head += "Host: plugin.moby.localhost\r\n"
        head += "User-Agent: vde-acceptance-tests\r\n"
        head += "Accept: application/vnd.docker.plugins.v1.2+json\r\n"
        head += "Content-Length: \(body.count)\r\n"
        head += "Connection: close\r\n\r\n"
        let raw = try await exchange(socket: socket, bytes: Array(head.utf8) + body, timeout: timeout)
        return try parse(raw)
    }

    /// Sends `bytes` as they are and returns every byte the server sent back before it closed
    /// the connection. Like dockerd, it does not half-close its side unless `halfClose` says so.
    /// `complete` may end the read early: it is asked after each chunk whether the reply is whole.
    static func exchange(
        socket path: String, bytes: [UInt8], halfClose: Bool = false, timeout: Duration = .seconds(60),
        complete: @escaping @Sendable ([UInt8]) -> Bool = { _ in false }
    ) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Error>) in
            DispatchQueue.global().async {
                continuation.resume(
                    with: Result {
                        try blockingExchange(
                            socket: path, bytes: bytes, halfClose: halfClose, timeout: timeout, complete: complete)
                    })
            }
        }
    }

    /// True when something accepts connections on the socket path.
    static func answers(socket path: String) -> Bool {
        guard let fd = try? connect(path, timeout: .seconds(2)) else { return false }
        close(fd)
        return true
    }

    private static func connect(_ path: String, timeout: Duration) throws -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AcceptanceFailure("socket(): errno \(errno)") }
        var seconds = timeout.components.seconds
        if seconds < 1 { seconds = 1 }
        var tv = timeval(tv_sec: Int(seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else {
            close(fd)
            throw AcceptanceFailure("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw AcceptanceFailure("connect(\(path)): \(String(cString: strerror(e)))")
        }
        return fd
    }

    private static func blockingExchange(
        socket path: String, bytes: [UInt8], halfClose: Bool, timeout: Duration, complete: ([UInt8]) -> Bool
    ) throws -> [UInt8] {
        let fd = try connect(path, timeout: timeout)
        defer { close(fd) }
        // Write what the server takes; a server that refuses a body early may close on us:
        // stop writing then (EPIPE/ECONNRESET) and read whatever reply it sent.
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET { break }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw AcceptanceFailure("timed out after \(timeout) writing to \(path)")
                }
                throw AcceptanceFailure("send to \(path): \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                reply += buffer[0..<n]
                if complete(reply) { break }
                continue
            }
            if n == 0 { break }
            if errno == EINTR { continue }
            if errno == ECONNRESET && !reply.isEmpty { break }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                throw AcceptanceFailure("no complete reply from \(path) within \(timeout) (got \(reply.count) bytes)")
            }
            throw AcceptanceFailure("recv from \(path): \(String(cString: strerror(errno))) after \(reply.count) bytes")
        }
        return reply
    }

    /// Parses one HTTP/1.1 response (Content-Length, chunked, or read-to-close body).
    static func parse(_ raw: [UInt8]) throws -> HTTPReply {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headEnd = raw.firstRange(of: separator) else {
            throw AcceptanceFailure(
                "malformed HTTP reply (no header end): \(String(decoding: raw.prefix(500), as: UTF8.self))")
        }
        let headText = String(decoding: raw[..<headEnd.lowerBound], as: UTF8.self)
        var lines = headText.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let statusLine = lines.removeFirst()
        let statusParts = statusLine.split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw AcceptanceFailure("malformed HTTP status line: \(statusLine)")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else {
                throw AcceptanceFailure("malformed HTTP header: \(line)")
            }
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingWhitespace))
        }
        var reply = HTTPReply(status: status, headers: headers, body: [])
        let rest = Array(raw[headEnd.upperBound...])
        if let length = reply.header("Content-Length").flatMap(Int.init) {
            guard rest.count >= length else {
                throw AcceptanceFailure("HTTP reply body shorter (\(rest.count)) than its Content-Length (\(length))")
            }
            reply.body = Array(rest.prefix(length))
        } else if reply.header("Transfer-Encoding")?.lowercased().contains("chunked") == true {
            reply.body = try dechunk(rest)
        } else {
            reply.body = rest
        }
        return reply
    }

    private static func dechunk(_ data: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while true {
            guard let lineEnd = data[index...].firstRange(of: [13, 10]) else {
                throw AcceptanceFailure("malformed chunked body")
            }
            let sizeText =
                String(decoding: data[index..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first.map(
                    String.init) ?? ""
            guard let size = Int(sizeText.trimmingWhitespace, radix: 16) else {
                throw AcceptanceFailure("malformed chunk size '\(sizeText)'")
            }
            index = lineEnd.upperBound
            if size == 0 { return out }
            guard index + size <= data.count else { throw AcceptanceFailure("truncated chunked body") }
            out += data[index..<index + size]
            index += size + 2
        }
    }
}
