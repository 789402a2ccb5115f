import ArgumentParser
import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// `vde-networker --network-id ID`: runs the switch and the plugs of one Docker network for the
/// supervisor, which talks to it in JSON lines over stdin and stdout, and later over the
/// worker's socket (``LinkServer``, docs/worker-protocol.md).
/// The network ID is in argv so that `ps` shows which network a worker serves.
///
/// A `ParsableCommand` with a `main` of its own, not an `AsyncParsableCommand`: the worker's
/// tasks run on ``QuietGlobalExecutor``, which must be installed before the first task starts.
@main
struct NetworkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vde-networker",
        abstract: "Runs the VDE switch and plugs of one Docker network (started by vde-supervisor).",
        discussion: "Requests arrive as JSON lines on stdin; replies and events leave on stdout; logs go to stderr.",
        version: Installation.version)

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

    static func main() {
        QuietGlobalExecutor.install()
        // Parsed in the first task, not here: ArgumentParser's parse touches about 40 kB of stack,
        // which stays with the main thread for good but goes back with an executor thread's.
        QuietGlobalExecutor.runAndParkMainThread {
            let command: NetworkerCommand
            do {
                guard let parsed = try parseAsRoot() as? NetworkerCommand else { exit() }
                command = parsed
            } catch {
                exit(withError: error)
            }
            await command.serve()
            exit()
        }
    }

    func serve() async {
        SignalHandling.ignoreBrokenPipe()
        let signals = SignalHandling.terminationRequests()
        LogSetup.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: LogSetup.label(networkID: networkID))
        let current = CurrentLink()
        let worker = Worker(
            networkID: networkID, executables: .resolve(), logger: logger,
            emit: { current.send(.event($0)) })
        logger.info("worker started", metadata: ["pid": "\(getpid())"])

        let server = LinkServer(worker: worker, networkID: networkID, current: current, logger: logger)
        switch await server.run(signals: signals) {
        case .shutDown:
            logger.info("worker exits (shutdown request)")
        case .detached(let reason):
            logger.info("worker exits (\(reason)); the switch and plugs keep running")
        case .neverStarted:
            // Nothing was handed over (no `start` succeeded): whatever a request began is undone.
            await worker.shutdown(reason: "end of input before start")
            logger.info("worker exits (end of input before start)")
        }
    }
}

extension DockerID: ExpressibleByArgument where Kind == NetworkKind {
    /// `--network-id` is read by the one rule of network IDs; ArgumentParser reports a refusal.
    public init?(argument: String) {
        guard let id = try? NetworkID(argument) else { return nil }
        self = id
    }
}
