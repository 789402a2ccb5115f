import Glibc
import Logging
import ServiceLifecycle
import Shared
import Testing

@testable import vde_supervisor

/// `vde-supervisor link`'s POST through the real control-socket server: the body arrives whole.
@Suite(.timeLimit(.minutes(1))) struct ControlClientPostTests {
    @Test func aPostedBodyReachesTheHandler() async throws {
        var template = Array("/tmp/vde-post-test-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer {
            $0.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/nonexistent"
        }
        defer {
            unlink(directory + "/control.sock")
            rmdir(directory)
        }
        let logger = Logger(label: "test")
        let (listening, continuation) = AsyncStream<Void>.makeStream()
        let server = UnixHTTPServer(
            name: "test", socketPath: directory + "/control.sock", inheritedSocket: nil, mode: 0o600,
            handler: { method, path, body in
                PluginReply(status: 200, body: Array("\(method) \(path) ".utf8) + body)
            },
            logger: logger, listening: continuation)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [], logger: logger)
        let running = Task { try await group.run() }
        for await _ in listening { break }
        let body = Array(#"{"network":"lab","action":"set","settings":{"delay":"50ms"}}"#.utf8)
        let socket = server.socketPath
        let reply = await Blocking.run { try? ControlClient.post(socketPath: socket, path: "/v1/link", body: body) }
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(reply?.status == 200)
        #expect(
            reply.map { String(decoding: $0.body, as: UTF8.self) } == "POST /v1/link "
                + String(decoding: body, as: UTF8.self))
    }
}
