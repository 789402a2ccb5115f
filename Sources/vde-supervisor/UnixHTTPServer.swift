// sd-daemon.h pulls in <sys/socket.h>, so its constants (SOCK_STREAM) come through CSystemd.
import CSystemd
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Shared
import Synchronization

/// Serves HTTP/1.1 on a unix socket, one task per connection, until graceful shutdown:
/// the Docker plugin API and the control socket of `vde-supervisor status`.
/// Bodies over `maxBodyBytes` are refused with 413.
struct UnixHTTPServer: Service {
    typealias Handler = @Sendable (_ method: String, _ path: String, _ body: [UInt8]) async -> PluginReply
    static let maxBodyBytes = 1 << 20

    /// What is served, for logs ("the Docker plugin API").
    let name: String
    let socketPath: String
    /// A listening socket inherited from systemd (socket activation); nil to bind `socketPath`.
    let inheritedSocket: Int32?
    /// Mode of a socket this server binds itself.
    let mode: mode_t
    let handler: Handler
    let logger: Logger
    /// Told once the socket accepts connections.
    let listening: AsyncStream<Void>.Continuation?

    func run() async throws {
        let initializer: @Sendable (Channel) -> EventLoopFuture<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                    wrappingChannelSynchronously: channel)
            }
        }
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        if let inheritedSocket {
            server = try await bootstrap.bind(inheritedSocket, childChannelInitializer: initializer)
            logger.info("serving \(name) on the socket systemd passed", metadata: ["socket": "\(socketPath)"])
        } else {
            try SocketPath.prepare(socketPath)
            server = try await bootstrap.bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: false,
                                              childChannelInitializer: initializer)
            // The socket grants control over host networking: root (and its group) only.
            chmod(socketPath, mode)
            logger.info("serving \(name)", metadata: ["socket": "\(socketPath)"])
        }
        listening?.yield()
        listening?.finish()
        let open = OpenConnections()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await serve(connection, open: open) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
            // dockerd keeps idle connections for reuse: close them, and the busy ones once
            // their reply is written, or shutdown would wait for dockerd forever.
            open.closeIdleAndDrain()
        }
        // A socket systemd owns stays; it lets dockerd reach the next start.
        if inheritedSocket == nil { unlink(socketPath) }
        logger.info("closed \(name)", metadata: ["socket": "\(socketPath)"])
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>,
                       open: OpenConnections) async {
        let id = open.register(connection.channel)
        defer { open.unregister(id) }
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body: [UInt8] = []
                var tooLarge = false
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead):
                        open.setBusy(id, true)
                        head = requestHead
                        body.removeAll(keepingCapacity: true)
                        tooLarge = false
                        if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init),
                           length > Self.maxBodyBytes {
                            tooLarge = true
                        }
                    case .body(let buffer):
                        if body.count + buffer.readableBytes > Self.maxBodyBytes {
                            tooLarge = true
                            body.removeAll()
                        } else if !tooLarge {
                            body.append(contentsOf: buffer.readableBytesView)
                        }
                    case .end:
                        guard let requestHead = head else { continue }
                        let started = ContinuousClock.now
                        let reply: PluginReply
                        if tooLarge {
                            reply = PluginRouter.errorReply(
                                status: 413, "request body larger than \(Self.maxBodyBytes) bytes", ipam: false)
                        } else {
                            reply = await handler("\(requestHead.method)", requestHead.uri, body)
                        }
                        logger.debug("\(name) call", metadata: [
                            "path": "\(NetworkOptions.sanitized(requestHead.uri))", "status": "\(reply.status)",
                            "duration": "\(ContinuousClock.now - started)",
                        ])
                        if logger.logLevel <= .trace {
                            logger.trace("\(name) call bodies", metadata: [
                                "request": "\(String(decoding: body.prefix(4096), as: UTF8.self))",
                                "reply": "\(String(decoding: reply.body, as: UTF8.self))",
                            ])
                        }
                        let keepAlive = requestHead.isKeepAlive && !tooLarge && !open.setBusy(id, false)
                        try await write(reply, to: outbound, version: requestHead.version, keepAlive: keepAlive)
                        head = nil
                        body.removeAll(keepingCapacity: false)
                        if !keepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("plugin connection ended with an error", metadata: ["error": "\(error)"])
        }
    }

    private func write(_ reply: PluginReply, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
                       version: HTTPVersion, keepAlive: Bool) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: DockerAPI.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: reply.status), headers: headers)
        try await outbound.write(.head(head))
        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: reply.body))))
        try await outbound.write(.end(nil))
    }
}

/// Getting a unix socket path ready to bind: parent directory made, a stale socket removed,
/// and a live one (another supervisor) refused rather than stolen.
enum SocketPath {
    static func prepare(_ path: String) throws {
        guard path.hasPrefix("/"), path.utf8.count < 108 else {
            throw VDEError.invalid("socket path \(path) must be absolute and shorter than 108 bytes")
        }
        try makeDirectories(parentOf: path)
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw VDEError.conflict("\(path) exists and is not a socket; move it away")
        }
        if answers(path) {
            throw VDEError.conflict("another process already serves \(path) (a second vde-supervisor?); stop it first")
        }
        unlink(path)
    }

    /// True when something accepts connections on the unix socket at `path`.
    static func answers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    static func makeDirectories(parentOf path: String) throws {
        var current = ""
        for component in path.split(separator: "/").dropLast() {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw VDEError.system("cannot create directory \(current): \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// The server's open connections and whether each is serving a request, so that shutdown can
/// close idle keep-alive connections at once and busy ones after their reply.
final class OpenConnections: Sendable {
    private struct Entry {
        var channel: any Channel
        var busy: Bool
    }

    private struct Registry {
        var entries: [Int: Entry] = [:]
        var nextID = 0
        var draining = false
    }

    private let registry = Mutex(Registry())

    func register(_ channel: any Channel) -> Int {
        let (id, draining) = registry.withLock { registry in
            registry.nextID += 1
            registry.entries[registry.nextID] = Entry(channel: channel, busy: false)
            return (registry.nextID, registry.draining)
        }
        if draining { channel.close(promise: nil) }
        return id
    }

    func unregister(_ id: Int) {
        _ = registry.withLock { $0.entries.removeValue(forKey: id) }
    }

    /// Marks the connection busy or idle; returns true when the server is draining
    /// (the connection must close after this reply).
    @discardableResult
    func setBusy(_ id: Int, _ busy: Bool) -> Bool {
        registry.withLock { registry in
            registry.entries[id]?.busy = busy
            return registry.draining
        }
    }

    func closeIdleAndDrain() {
        let idle = registry.withLock { registry in
            registry.draining = true
            return registry.entries.values.filter { !$0.busy }.map(\.channel)
        }
        for channel in idle { channel.close(promise: nil) }
    }
}

extension UnixHTTPServer: CustomStringConvertible {
    var description: String { "UnixHTTPServer(\(name), \(socketPath))" }
}
