import CSystemd
import Glibc
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Testing

@testable import vde_supervisor

/// A raw client socket with a receive timeout, to act like a slow or greedy client. Its blocking
/// receive runs off the cooperative pool, where the server's connection tasks run.
private struct RawClient: Sendable {
    let fd: Int32

    init(path: String, receiveTimeout: Int = 20) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var timeout = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(connected == 0, "connect: \(String(cString: strerror(errno)))")
    }

    func send(_ text: String) {
        _ = text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    }

    /// What arrives until the server closes (`closed`), or the receive timeout passes.
    func receive() async -> (text: String, closed: Bool) {
        let (text, closed, _) = await receiveTimed()
        return (text, closed)
    }

    /// ``receive()`` and when it ended (on the receiving thread, whatever the pool does later).
    func receiveTimed() async -> (text: String, closed: Bool, at: ContinuousClock.Instant) {
        await Blocking.run {
            let (text, closed) = receiveBlocking()
            return (text, closed, ContinuousClock.now)
        }
    }

    private func receiveBlocking() -> (text: String, closed: Bool) {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { return (String(decoding: bytes, as: UTF8.self), true) }
            if n < 0 {
                if errno == EINTR { continue }
                return (String(decoding: bytes, as: UTF8.self), errno == ECONNRESET)
            }
            bytes += buffer[..<n]
            // One whole reply of the test handler ("{}"): stop reading, the connection stays open.
            if String(decoding: bytes, as: UTF8.self).hasSuffix("\r\n\r\n{}") {
                return (String(decoding: bytes, as: UTF8.self), false)
            }
        }
    }

    func close() { Glibc.close(fd) }
}

private let request = "POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\n\r\n{}"
private let halfRequest = "POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 20\r\n\r\n{\"a\""

/// Runs a server with `limits` on a temporary socket in a service group, until `body` returns;
/// then triggers graceful shutdown and returns how long the server took to stop.
private func withServer(
    _ limits: UnixHTTPServer.Limits,
    _ body: (UnixHTTPServer) async throws -> Void
) async throws -> Duration {
    var template = Array("/tmp/vde-http-test-XXXXXX".utf8CString)
    let directory = template.withUnsafeMutableBufferPointer {
        $0.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/nonexistent"
    }
    defer {
        unlink(directory + "/http.sock")
        rmdir(directory)
    }
    let logger = Logger(label: "test")
    let (listening, continuation) = AsyncStream<Void>.makeStream()
    let server = UnixHTTPServer(
        name: "test", socketPath: directory + "/http.sock", inheritedSocket: nil, mode: 0o600,
        handler: { _, _, _ in PluginReply(status: 200, body: Array("{}".utf8)) },
        logger: logger, listening: continuation, limits: limits)
    let group = ServiceGroup(services: [server], gracefulShutdownSignals: [], logger: logger)
    let running = Task { try await group.run() }
    for await _ in listening { break }
    do {
        try await body(server)
    } catch {
        await group.triggerGracefulShutdown()
        _ = try? await running.value
        throw error
    }
    let stopping = ContinuousClock.now
    await group.triggerGracefulShutdown()
    try await running.value
    return ContinuousClock.now - stopping
}

@Suite(.timeLimit(.minutes(1))) struct UnixHTTPServerTests {
    @Test func aHalfSentRequestIsClosedAfterTheRequestTimeout() async throws {
        _ = try await withServer(.init(requestTimeout: .milliseconds(300), idleTimeout: .seconds(60))) { server in
            let client = try RawClient(path: server.socketPath)
            defer { client.close() }
            client.send(request)
            #expect(await client.receive().text.hasPrefix("HTTP/1.1 200"), "a whole request is served")
            let started = ContinuousClock.now
            client.send(halfRequest)
            let (text, closed, at) = await client.receiveTimed()
            let waited = at - started
            #expect(closed && text.isEmpty, "the half-sent request should be cut off without a reply: \(text)")
            // Closed at all within the 20 s receive timeout is what matters (nothing else closes
            // it: the idle timeout is 60 s); the time shows it was the request timeout.
            #expect(waited >= .milliseconds(250), "closed after \(waited)")
        }
    }

    @Test func anIdleKeepAliveConnectionIsClosedAfterTheIdleTimeout() async throws {
        _ = try await withServer(.init(requestTimeout: .seconds(60), idleTimeout: .milliseconds(300))) { server in
            let client = try RawClient(path: server.socketPath)
            defer { client.close() }
            client.send(request)
            #expect(await client.receive().text.hasPrefix("HTTP/1.1 200"))
            let started = ContinuousClock.now
            let (_, closed, at) = await client.receiveTimed()
            #expect(closed, "the idle connection should be closed")
            #expect(at - started < .seconds(20), "closed after \(at - started)")
        }
    }

    @Test func connectionsOverTheCapAreClosedWhileTheFirstAreServed() async throws {
        _ = try await withServer(.init(requestTimeout: .seconds(60), idleTimeout: .seconds(60), maxConnections: 2)) {
            server in
            let first = try RawClient(path: server.socketPath)
            let second = try RawClient(path: server.socketPath)
            defer {
                first.close()
                second.close()
            }
            for client in [first, second] {
                client.send(request)
                #expect(await client.receive().text.hasPrefix("HTTP/1.1 200"))
            }
            #expect(server.connections.count == 2)
            let third = try RawClient(path: server.socketPath)
            defer { third.close() }
            third.send(request)
            let (text, closed) = await third.receive()
            #expect(closed && text.isEmpty, "the connection over the cap should be closed unanswered: \(text)")
            // The first two still work.
            for client in [first, second] {
                client.send(request)
                #expect(await client.receive().text.hasPrefix("HTTP/1.1 200"))
            }
        }
    }

    /// A client that sent half a request must not hold shutdown (systemd would SIGKILL).
    @Test func shutdownWithAHalfSentRequestIsPrompt() async throws {
        var client: RawClient?
        defer { client?.close() }
        let stopTime = try await withServer(.init(requestTimeout: .seconds(60), idleTimeout: .seconds(60))) { server in
            let connected = try RawClient(path: server.socketPath, receiveTimeout: 2)
            client = connected
            connected.send(request)
            #expect(await connected.receive().text.hasPrefix("HTTP/1.1 200"))
            connected.send(halfRequest)
        }
        // The request timeout is 60 s: only closing the half-open connection at shutdown is this fast.
        #expect(stopTime < .seconds(2), "shutdown took \(stopTime)")
    }
}
