import ArgumentParser
import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// `vde-networker --network-id ID`: runs the switch and the plugs of one Docker network for the
/// supervisor, which talks to it in JSON lines over stdin and stdout (docs/worker-protocol.md).
/// The network ID is in argv so that `ps` shows which network a worker serves.
@main
struct NetworkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vde-networker",
        abstract: "Runs the VDE switch and plugs of one Docker network (started by vde-supervisor).",
        discussion: "Requests arrive as JSON lines on stdin; replies and events leave on stdout; logs go to stderr.")

    @Option(
        name: .customLong("network-id"), help: "The Docker network this worker serves (1 to 128 letters and digits).")
    var networkID: NetworkID

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning or error.")
    var logLevel: String = "info"

    /// Kept so that a supervisor that passes it can start this worker; every path of the network
    /// comes in the `start` request (`SwitchSpec.networkDir`).
    @Option(name: .customLong("run-dir"), help: "Ignored: the network's directories come with the start request.")
    var runDir: String = "/run/vde-supervisor"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(LogSetup.levels.joined(separator: ", "))")
        }
        guard runDir.hasPrefix("/") else {
            throw ValidationError("--run-dir must be an absolute path")
        }
    }

    func run() async throws {
        SignalHandling.ignoreBrokenPipe()
        let signals = SignalHandling.terminationRequests()
        LogSetup.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: LogSetup.label(networkID: networkID))
        let link = SupervisorLink(logger: logger)
        let worker = Worker(
            networkID: networkID, executables: .resolve(), logger: logger,
            emit: { link.send(.event($0)) })
        link.send(.event(.hello(pid: getpid(), detail: "vde-networker for network \(networkID.short)")))
        logger.info("worker started", metadata: ["pid": "\(getpid())"])

        let reason = await Self.serve(worker: worker, link: link, signals: signals, logger: logger)
        await worker.shutdown(reason: reason)
        await link.flush()
        logger.info("worker exits (\(reason))")
    }

    /// Serves requests until EOF on stdin, SIGTERM/SIGINT, or a `shutdown` request has been
    /// answered; returns why it stopped.
    ///
    /// `ping` and `status` run in tasks of their own, so they answer at once; the requests that
    /// change state run one after the other in arrival order (an `addEndpoint` followed by its
    /// `joinEndpoint` must not be overtaken).
    static func serve(worker: Worker, link: SupervisorLink, signals: AsyncStream<Int32>, logger: Logger) async -> String
    {
        let (stops, stop) = AsyncStream.makeStream(of: String.self)
        let (ordered, enqueue) = AsyncStream.makeStream(of: WorkerRequest.self)
        let sequencer = Task {
            for await request in ordered {
                let reply = await worker.handle(request)
                link.send(reply)
                if request.command == .shutdown { stop.yield("shutdown request") }
            }
        }
        let reader = Task {
            let incoming: AsyncMapSequence<AsyncStream<LineFramer.Line>, IncomingLine>
            do {
                incoming = try SupervisorLink.incoming()
            } catch {
                logger.critical("cannot read requests from the supervisor: \(error)")
                stop.yield("cannot read stdin: \(error)")
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
                        "dropped a line of \(length) bytes from the supervisor (limit \(WorkerProtocol.maxLineBytes))")
                case .blank:
                    continue
                }
            }
            stop.yield("end of input")
        }
        let signalWatch = Task {
            for await number in signals {
                stop.yield(number == SIGTERM ? "SIGTERM" : "SIGINT")
                return
            }
        }
        var reason = "end of input"
        for await first in stops {
            reason = first
            break
        }
        signalWatch.cancel()
        // Requests still queued are answered (with failures once the shutdown has begun).
        enqueue.finish()
        _ = (reader, sequencer)
        return reason
    }
}

extension DockerID: ExpressibleByArgument where Kind == NetworkKind {
    /// `--network-id` is read by the one rule of network IDs; ArgumentParser reports a refusal.
    public init?(argument: String) {
        guard let id = try? NetworkID(argument) else { return nil }
        self = id
    }
}
