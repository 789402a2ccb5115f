import Logging
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The link the worker's events go to now; none while no supervisor is connected (events are
/// then dropped: a supervisor that connects later asks `start`, which answers with the state).
final class CurrentLink: Sendable {
    private let link = Mutex<SupervisorLink?>(nil)

    func set(_ new: SupervisorLink?) { link.withLock { $0 = new } }

    func send(_ message: WorkerMessage) { link.withLock { $0 }?.send(message) }
}

/// Serves the worker's supervisor links, one at a time, for the life of the worker
/// (docs/worker-protocol.md, "Links"):
/// - the first is stdin/stdout, from the supervisor that spawned the worker;
/// - a successful `start` binds the worker's socket (`NetworkPaths.workerSocket`) first: a
///   socket there that answers means another worker serves the network (`conflict`, and this
///   worker touches nothing); a stale one is replaced;
/// - at the end of a link's input the worker keeps its switch and plugs, and, once started,
///   waits for a supervisor on the socket; it accepts only while it has no link, only a peer of
///   its own user, and sends `hello` first on every link;
/// - a `shutdown` request stops everything (the worker then exits and removes its socket);
///   SIGTERM and SIGINT detach (``Worker/detach(reason:)``) and exit, leaving the data path.
final class LinkServer: Sendable {
    /// How serving ended.
    enum Ending: Sendable, Equatable {
        /// A `shutdown` request was answered: everything is stopped.
        case shutDown
        /// SIGTERM or SIGINT: the worker detached and leaves its data path running.
        case detached(String)
        /// The first link ended before any `start`: nothing was handed over.
        case neverStarted
    }

    fileprivate enum Event: Sendable {
        case signal(Int32)
        case shutdownAnswered
        case linkEnded(generation: Int)
        case connectionWaiting
    }

    let worker: Worker
    let networkID: NetworkID
    let current: CurrentLink
    let logger: Logger
    private let listener = Mutex<UnixListener?>(nil)
    private let shutdownRequested = Mutex(false)
    /// Directories made for the socket by a `start` that then failed go again.
    private let madeDirectories = Mutex<[String]>([])

    init(worker: Worker, networkID: NetworkID, current: CurrentLink, logger: Logger) {
        self.worker = worker
        self.networkID = networkID
        self.current = current
        self.logger = logger
    }

    /// Where the worker listens, once `start` made its socket.
    var socketPath: String? { listener.withLock { $0?.path } }

    /// Serves links until a `shutdown` request, SIGTERM/SIGINT, or the end of the first link
    /// before any `start`.
    func run(signals: AsyncStream<Int32>) async -> Ending {
        let (events, post) = AsyncStream.makeStream(of: Event.self)
        let signalTask = Task {
            for await number in signals { post.yield(.signal(number)) }
        }
        defer { signalTask.cancel() }
        var generation = 0
        var session: LinkSession? = LinkSession(
            server: self, link: SupervisorLink(logger: logger), input: STDIN_FILENO, generation: generation,
            post: post)
        for await event in events {
            switch event {
            case .signal(let number):
                let name = number == SIGTERM ? "SIGTERM" : "SIGINT"
                current.set(nil)
                await worker.detach(reason: name)
                closeListener()
                return .detached(name)
            case .shutdownAnswered:
                await session?.link.flush()
                closeListener()
                return .shutDown
            case .linkEnded(let ended):
                guard ended == generation, let ending = session else { continue }
                current.set(nil)
                // Requests still in flight finish first (a `start` may be making the socket).
                await ending.drain()
                ending.link.close()
                session = nil
                // A `shutdown` answered while the input ended has closed the socket: that is the ending.
                if shutdownRequested.withLock({ $0 }) { return .shutDown }
                guard let path = socketPath else { return .neverStarted }
                logger.notice(
                    "the supervisor link closed; the switch and plugs keep running, waiting for a supervisor at \(path)"
                )
                armAccept(post)
            case .connectionWaiting:
                guard session == nil else { continue }
                guard let connection = acceptSupervisor() else {
                    armAccept(post)
                    continue
                }
                generation += 1
                session = LinkSession(
                    server: self, link: SupervisorLink(output: .socket(connection), logger: logger),
                    input: dup(connection.fd), generation: generation, post: post)
            }
        }
        return .shutDown
    }

    /// Serves one request: `start` makes the worker's socket first (see the type's comment).
    func handle(_ request: WorkerRequest) async -> WorkerMessage {
        if request.command == .shutdown {
            shutdownRequested.withLock { $0 = true }
            // Before the worker's shutdown, which removes the network dir when it is empty.
            closeListener()
        }
        guard case .start(let spec, _) = request.command else { return await worker.handle(request) }
        let made: Bool
        do {
            made = try openListener(at: spec.paths)
        } catch {
            logger.warning("start refused: \(error.message)")
            return .failure(id: request.id, error)
        }
        let reply = await worker.handle(request)
        if made, case .failure = reply { closeListener(removingDirectories: true) }
        return reply
    }

    /// Binds the worker's socket unless it is bound already; true when this call bound it.
    private func openListener(at paths: NetworkPaths) throws(VDEError) -> Bool {
        if listener.withLock({ $0 != nil }) { return false }
        let path = paths.workerSocket
        do {
            let made = try FileSystem.makeDirectories(paths.networkDir, mode: 0o755)
            madeDirectories.withLock { $0 = made }
            let bound = try UnixListener.bind(path)
            listener.withLock { $0 = bound }
            logger.info("listening for a supervisor at \(path)")
            return true
        } catch {
            removeMadeDirectories()
            switch error.errno {
            case EADDRINUSE:
                throw .conflict(
                    "another vde-networker already serves network \(networkID.short) (its socket \(path) answers); this worker touches nothing"
                )
            default:
                throw .system("cannot listen at \(path) for a supervisor: \(error)")
            }
        }
    }

    private func closeListener(removingDirectories: Bool = false) {
        let closing = listener.withLock { slot in
            defer { slot = nil }
            return slot
        }
        closing?.close()
        if removingDirectories { removeMadeDirectories() }
    }

    private func removeMadeDirectories() {
        let made = madeDirectories.withLock { made in
            defer { made = [] }
            return made
        }
        for directory in made.reversed() { _ = FileSystem.removeIfEmpty(directory) }
    }

    private func armAccept(_ post: AsyncStream<Event>.Continuation) {
        let armed = listener.withLock { $0 }?.onConnection { post.yield(.connectionWaiting) } ?? false
        if !armed { logger.error("cannot wait for a supervisor: no descriptor watcher") }
    }

    /// One waiting connection from a process of this worker's own user, or nil.
    private func acceptSupervisor() -> UnixSocket? {
        guard let listener = listener.withLock({ $0 }) else { return nil }
        while true {
            let fd: Int32
            do {
                guard let accepted = try listener.accept() else { return nil }
                fd = accepted
            } catch {
                logger.warning("cannot accept a supervisor: \(error)")
                return nil
            }
            do {
                let peer = try UnixListener.peer(of: fd)
                guard peer.uid == geteuid() else {
                    logger.warning("refused a connection from pid \(peer.pid) (uid \(peer.uid)): not our user")
                    close(fd)
                    continue
                }
                logger.notice("a supervisor connected", metadata: ["pid": "\(peer.pid)"])
            } catch {
                logger.warning("refused a connection: \(error)")
                close(fd)
                continue
            }
            return UnixSocket(adopting: fd, path: listener.path)
        }
    }

    // MARK: One link

    /// One supervisor link being served: `hello` first; `ping` and `status` run in tasks of their
    /// own, so they answer at once; the requests that change state run one after the other in
    /// arrival order (an `addEndpoint` followed by its `joinEndpoint` must not be overtaken).
    private final class LinkSession: Sendable {
        let link: SupervisorLink
        private let reader: Task<Void, Never>
        private let sequencer: Task<Void, Never>

        init(
            server: LinkServer, link: SupervisorLink, input: Int32, generation: Int,
            post: AsyncStream<Event>.Continuation
        ) {
            self.link = link
            let logger = server.logger
            server.current.set(link)
            link.send(.event(.hello(pid: getpid(), detail: "vde-networker for network \(server.networkID.short)")))
            let (ordered, enqueue) = AsyncStream.makeStream(of: WorkerRequest.self)
            sequencer = Task {
                for await request in ordered {
                    let reply = await server.handle(request)
                    link.send(reply)
                    if request.command == .shutdown { post.yield(.shutdownAnswered) }
                    // A change is done: what it allocated and freed goes back to the kernel.
                    HeapRelease.now()
                }
            }
            let worker = server.worker
            reader = Task {
                defer {
                    enqueue.finish()
                    post.yield(.linkEnded(generation: generation))
                }
                let incoming: AsyncMapSequence<AsyncStream<LineFramer.Line>, IncomingLine>
                do {
                    incoming = try SupervisorLink.incoming(from: input)
                } catch {
                    logger.critical("cannot read requests from the supervisor: \(error)")
                    close(input)
                    return
                }
                for await line in incoming {
                    switch line {
                    case .request(let request) where request.command.isQuery:
                        Task { link.send(await worker.handle(request)) }
                    case .request(let request):
                        enqueue.yield(request)
                    case .invalid(let id, let reason):
                        logger.warning("bad line from the supervisor: \(reason)")
                        if let id { link.send(.failure(id: id, .invalid(reason))) }
                    case .oversized(let length):
                        logger.warning(
                            "dropped a line of \(length) bytes from the supervisor (limit \(WorkerProtocol.maxLineBytes))"
                        )
                    case .blank:
                        continue
                    }
                }
            }
        }

        /// Returns once the input has ended and every request from it has been answered.
        func drain() async {
            await reader.value
            await sequencer.value
        }
    }
}
