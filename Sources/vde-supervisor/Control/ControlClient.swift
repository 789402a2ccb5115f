import Glibc
import Shared

/// A small blocking HTTP/1.1 client for the control socket, with one deadline for the whole exchange,
/// so that `vde-supervisor status` never hangs.
enum ControlClient {
    struct Failure: Error {
        var message: String
    }

    /// `GET path` on the unix socket; returns the status code and body.
    /// Use HTTP/1.0 for peers that would otherwise answer with chunked encoding (dockerd).
    static func get(
        socketPath: String, path: String, httpVersion: String = "1.1",
        timeoutSeconds: Int = 5
    ) throws(Failure) -> (status: Int, body: [UInt8]) {
        try request(
            socketPath: socketPath, method: "GET", path: path, httpVersion: httpVersion,
            timeoutSeconds: timeoutSeconds)
    }

    /// `POST path` with a JSON body on the unix socket; returns the status code and body.
    static func post(socketPath: String, path: String, body: [UInt8], timeoutSeconds: Int = 30) throws(Failure) -> (
        status: Int, body: [UInt8]
    ) {
        try request(socketPath: socketPath, method: "POST", path: path, body: body, timeoutSeconds: timeoutSeconds)
    }

    static func request(
        socketPath: String, method: String, path: String, body: [UInt8] = [], httpVersion: String = "1.1",
        timeoutSeconds: Int
    ) throws(Failure) -> (status: Int, body: [UInt8]) {
        let deadline = ContinuousClock.now + .seconds(timeoutSeconds)
        let socket: UnixSocket
        do {
            socket = try UnixSocket.connect(to: socketPath, deadline: deadline)
        } catch {
            if error.errno == ENAMETOOLONG { throw Failure(message: "socket path \(socketPath) is too long") }
            throw Failure(message: error.call == "socket" ? "socket: \(error.text)" : error.text)
        }
        defer { socket.close() }
        var head = "\(method) \(path) HTTP/\(httpVersion)\r\nHost: localhost\r\nConnection: close\r\n"
        if method != "GET" { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let request = Array((head + "\r\n").utf8) + body
        do {
            try socket.send(request, deadline: deadline)
        } catch {
            throw Failure(message: "could not send the request: \(error.text)")
        }
        let response: [UInt8]
        do {
            response = try socket.receiveMessage(deadline: deadline, limit: 64 << 20)
        } catch {
            switch error.errno {
            case ETIMEDOUT: throw Failure(message: "no answer within \(timeoutSeconds) s")
            case EMSGSIZE: throw Failure(message: "answer larger than 64 MiB")
            default: throw Failure(message: error.text)
            }
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
