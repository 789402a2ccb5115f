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
/// Bodies over `maxBodyBytes` are refused with 413; ``Limits`` bound how long and how many
/// connections a client can hold.
struct UnixHTTPServer: Service {
    typealias Handler = @Sendable (_ method: String, _ path: String, _ body: [UInt8]) async -> PluginReply
    static let maxBodyBytes = 1 << 20

    /// What one client may hold. dockerd keeps one keep-alive connection to the plugin, opens
    /// more only for calls made at the same moment (containers started in parallel), and sends
    /// each request (a few hundred bytes of JSON) in one write.
    struct Limits: Sendable {
        /// From the first byte of a request to its end. dockerd's requests arrive at once; 10 s
        /// is ample on a loaded host and ends a slowly dribbled (slowloris) request.
        var requestTimeout: TimeAmount = .seconds(10)
        /// Between requests on a keep-alive connection (and before the first one). dockerd's
        /// transport keeps idle connections without limit; five minutes lets it reuse one across
        /// bursts, so the rare close of a connection it is just about to use (it retries plugin
        /// calls) stays rare, and frees what a client that went quiet holds.
        var idleTimeout: TimeAmount = .minutes(5)
        /// Open connections; more are closed at once. 64 covers a compose project of 64 services
        /// starting together, and bounds the descriptors and tasks a local client can take.
        var maxConnections = 64
    }

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
    var limits = Limits()
    /// The open connections (tests read their number).
    let connections = OpenConnections()

    func run() async throws {
        let limits = self.limits
        let initializer:
            @Sendable (Channel) -> EventLoopFuture<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>> = {
                channel in
                channel.eventLoop.makeCompletedFuture {
                    let deadlines = ConnectionDeadlines(limits: limits)
                    try channel.pipeline.syncOperations.addHandler(
                        RawReadWatcher(deadlines: deadlines), position: .first)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(RequestWatcher(deadlines: deadlines))
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
            server = try await bootstrap.bind(
                unixDomainSocketPath: socketPath, cleanupExistingSocketFile: false,
                childChannelInitializer: initializer)
            // The socket grants control over host networking: root (and its group) only.
            chmod(socketPath, mode)
            logger.info("serving \(name)", metadata: ["socket": "\(socketPath)"])
        }
        listening?.yield()
        listening?.finish()
        let open = connections
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { accepted in
                    for try await connection in accepted {
                        guard let id = open.register(connection.channel, limit: limits.maxConnections) else {
                            logger.warning("refused a connection to \(name): \(limits.maxConnections) are open")
                            // Closed unanswered (an NIOAsyncChannel must be closed through it).
                            group.addTask { try? await connection.executeThenClose { _, _ in } }
                            continue
                        }
                        group.addTask { await serve(connection, id: id, open: open) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
            // dockerd keeps idle connections for reuse: close them (and those in the middle of
            // sending a request), and the busy ones once their reply is written, or shutdown
            // would wait for dockerd, or for a client that never finishes its request.
            open.closeIdleAndDrain()
        }
        // A socket systemd owns stays; it lets dockerd reach the next start.
        if inheritedSocket == nil { unlink(socketPath) }
        logger.info("closed \(name)", metadata: ["socket": "\(socketPath)"])
    }

    private func serve(
        _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>,
        id: Int, open: OpenConnections
    ) async {
        defer { open.unregister(id) }
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body: [UInt8] = []
                var tooLarge = false
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                        body.removeAll(keepingCapacity: true)
                        tooLarge = false
                        if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init),
                            length > Self.maxBodyBytes
                        {
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
                        // Busy from here until the reply is written: shutdown waits for it.
                        open.setBusy(id, true)
                        let started = ContinuousClock.now
                        let reply: PluginReply
                        if tooLarge {
                            reply = PluginRouter.errorReply(
                                status: 413, "request body larger than \(Self.maxBodyBytes) bytes", ipam: false)
                        } else {
                            reply = await handler("\(requestHead.method)", requestHead.uri, body)
                        }
                        logger.debug(
                            "\(name) call",
                            metadata: [
                                "path": "\(UntrustedText(requestHead.uri))", "status": "\(reply.status)",
                                "duration": "\(ContinuousClock.now - started)",
                            ])
                        if logger.logLevel <= .trace {
                            logger.trace(
                                "\(name) call bodies",
                                metadata: [
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

    private func write(
        _ reply: PluginReply, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        version: HTTPVersion, keepAlive: Bool
    ) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: DockerAPI.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(
            version: version, status: HTTPResponseStatus(statusCode: reply.status), headers: headers)
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
    static func answers(_ path: String) -> Bool { UnixSocket.answers(path) }

    static func makeDirectories(parentOf path: String) throws {
        do {
            try FileSystem.makeDirectories(FileSystem.parent(of: path), mode: 0o755)
        } catch {
            throw VDEError.system("cannot create the directory of \(path): \(error)")
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

    /// Registers a new connection; nil (not registered) when `limit` connections are open.
    func register(_ channel: any Channel, limit: Int = .max) -> Int? {
        let registered: (id: Int, draining: Bool)? = registry.withLock { registry in
            guard registry.entries.count < limit else { return nil }
            registry.nextID += 1
            registry.entries[registry.nextID] = Entry(channel: channel, busy: false)
            return (registry.nextID, registry.draining)
        }
        guard let registered else { return nil }
        if registered.draining { channel.close(promise: nil) }
        return registered.id
    }

    /// How many connections are open.
    var count: Int { registry.withLock { $0.entries.count } }

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

/// The timers of one connection, on its event loop: a request must arrive whole within
/// ``UnixHTTPServer/Limits/requestTimeout`` of its first byte, and an idle connection is closed
/// after ``UnixHTTPServer/Limits/idleTimeout``. While the handler works on a request no timer
/// runs (a CreateNetwork may wait for its worker).
final class ConnectionDeadlines: @unchecked Sendable {
    // @unchecked: used only on the connection's event loop, by its two handlers.
    private enum Phase { case idle, receiving, handling }

    private let limits: UnixHTTPServer.Limits
    private var phase = Phase.idle
    private var timer: Scheduled<Void>?
    /// Bytes of a next request arrived while the handler worked on this one.
    private var nextRequestStarted = false

    init(limits: UnixHTTPServer.Limits) { self.limits = limits }

    /// The connection is open: it must start a request before the idle timeout.
    func opened(_ channel: any Channel) {
        phase = .idle
        arm(channel, after: limits.idleTimeout)
    }

    /// Bytes arrived: the first ones after idle start a request's deadline.
    func bytesArrived(_ channel: any Channel) {
        switch phase {
        case .idle:
            phase = .receiving
            arm(channel, after: limits.requestTimeout)
        case .handling:
            nextRequestStarted = true
        case .receiving:
            break
        }
    }

    /// The request has arrived whole; the handler runs without a deadline.
    func requestComplete() {
        phase = .handling
        timer?.cancel()
        timer = nil
    }

    /// The reply is written: idle again, or receiving when the next request has begun.
    func responseWritten(_ channel: any Channel) {
        if nextRequestStarted {
            nextRequestStarted = false
            phase = .receiving
            arm(channel, after: limits.requestTimeout)
        } else {
            phase = .idle
            arm(channel, after: limits.idleTimeout)
        }
    }

    func closed() {
        timer?.cancel()
        timer = nil
    }

    private func arm(_ channel: any Channel, after delay: TimeAmount) {
        timer?.cancel()
        timer = channel.eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
    }
}

/// First in the pipeline: sees the raw bytes of each request as they arrive.
final class RawReadWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let deadlines: ConnectionDeadlines

    init(deadlines: ConnectionDeadlines) { self.deadlines = deadlines }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { deadlines.opened(context.channel) }
    }

    func channelActive(context: ChannelHandlerContext) {
        deadlines.opened(context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        deadlines.bytesArrived(context.channel)
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadlines.closed()
        context.fireChannelInactive()
    }
}

/// After the HTTP codec: sees where a request ends and where its reply ends.
final class RequestWatcher: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    private let deadlines: ConnectionDeadlines

    init(deadlines: ConnectionDeadlines) { self.deadlines = deadlines }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { deadlines.requestComplete() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { deadlines.responseWritten(context.channel) }
        context.write(data, promise: promise)
    }
}

extension UnixHTTPServer: CustomStringConvertible {
    var description: String { "UnixHTTPServer(\(name), \(socketPath))" }
}
