// sd-daemon.h pulls in <sys/socket.h>, so its constants (SOCK_STREAM) come through CSystemd.
import CSystemd
import Glibc
import Shared

/// A small blocking HTTP/1.1 client for the control socket, with a deadline on every step,
/// so that `vde-supervisor status` never hangs.
enum ControlClient {
    struct Failure: Error {
        var message: String
    }

    /// `GET path` on the unix socket; returns the status code and body.
    /// Use HTTP/1.0 for peers that would otherwise answer with chunked encoding (dockerd).
    static func get(socketPath: String, path: String, httpVersion: String = "1.1",
                    timeoutSeconds: Int = 5) throws(Failure) -> (status: Int, body: [UInt8]) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(message: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard socketPath.utf8.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw Failure(message: "socket path \(socketPath) is too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in socketPath.utf8.enumerated() { raw[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { throw Failure(message: String(cString: strerror(errno))) }
        let request = Array("GET \(path) HTTP/\(httpVersion)\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            throw Failure(message: "could not send the request: \(String(cString: strerror(errno)))")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(message: errno == EAGAIN ? "no answer within \(timeoutSeconds) s" : String(cString: strerror(errno)))
            }
            response.append(contentsOf: buffer[..<n])
            if response.count > 64 << 20 { throw Failure(message: "answer larger than 64 MiB") }
        }
        return try parse(response)
    }

    static func parse(_ response: [UInt8]) throws(Failure) -> (status: Int, body: [UInt8]) {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let end = response.indices.first(where: { response[$0...].starts(with: separator) }) else {
            throw Failure(message: "malformed HTTP answer")
        }
        let head = String(decoding: response[..<end], as: UTF8.self)
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw Failure(message: "malformed HTTP status line") }
        return (status, Array(response[(end + separator.count)...]))
    }
}
