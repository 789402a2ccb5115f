import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// `vde-networker --network-id ID`, or a worker forked by `vde-networker --fork-server`
/// (``ForkServer``): runs the switch and the plugs of one Docker network for the
/// supervisor, which talks to it in JSON lines over stdin and stdout, and later over the
/// worker's socket (``LinkServer``, docs/worker-protocol.md). The command line is read by
/// ``WorkerArguments``.
///
/// The worker's tasks run on ``QuietGlobalExecutor``, which must be installed before the first
/// task starts; one thread (the main thread, or a fresh one in a forked worker) then serves the
/// ``DescriptorWatcher`` and runs every job between its waits.
@main
enum NetworkerMain {
    static func main() {
        let forked: ForkServer.Forked
        do {
            switch try WorkerArguments.parse(Array(CommandLine.arguments.dropFirst())) {
            case .serve(let arguments):
                QuietGlobalExecutor.install()
                run(loggingReady: false) { arguments }
            case .forkServer(let logLevel, let runDir):
                // Returns only in a forked worker or spare.
                forked = ForkServer.run(executable: CommandLine.arguments[0], logLevel: logLevel, runDir: runDir)
            case .help:
                print(WorkerArguments.usage)
                exit(0)
            case .version:
                print(Installation.version)
                exit(0)
            }
        } catch {
            try? FileSystem.writeAll(Array("vde-networker: \(error)\n\n\(WorkerArguments.usage)\n".utf8), to: 2)
            exit(64)  // EX_USAGE
        }
        QuietGlobalExecutor.install()
        // A forked worker's main thread is a copy of the fork server's, thread-local storage
        // included: the Swift runtime's and standard library's caches of the thread ID (filled
        // once per thread) still hold the server's, and their locks hand that ID to the kernel
        // (priority-inheritance futexes). A lock this thread took under contention could then
        // never be released: the first workers forked this way hung in `swift_once` on both of
        // their threads, one network in about 150 (gdb of the hung worker). A fresh thread has
        // fresh caches: it runs the worker (a spare first waits there for its network), and
        // this one waits for good, never to lock again.
        do {
            try OSThread.detach { run(loggingReady: true) { await forked.arguments() } }
        } catch {
            try? FileSystem.writeAll(Array("vde-networker: cannot start its first thread: \(error)\n".utf8), to: 2)
            exit(71)  // EX_OSERR
        }
        while true { pause() }
    }

    /// Runs the worker on the calling thread, which serves the descriptor watcher and runs every
    /// job between its waits: the worker has no executor thread.
    ///
    /// What does not depend on the network comes before `arguments`, which a spare awaits (its
    /// assignment, ``ForkServer/Spare/Assignee/assignment()``): the runtime (the watcher's
    /// epoll instance and eventfd, the hosted executor, their first page faults) and the
    /// programs' paths. From the assignment to the worker's first log line this took 1.1 ms,
    /// now 0.3 (CreateNetwork over the plugin socket 8.4 → 7.7 ms, 40 rounds A B; per network
    /// 2 kB more at 100 × 2, the spare's pages written ahead: docs/benchmarks.md). Coding a
    /// `start` and its reply ahead as well saved nothing more and cost 10 kB per network.
    private static func run(loggingReady: Bool, _ arguments: @escaping @Sendable () async -> WorkerArguments) -> Never {
        DescriptorWatcher.serveOnCallingThread(hosting: QuietGlobalExecutor.hostedByWatcher()) {
            QuietGlobalExecutor.start {
                let prepared = Executables.resolve()
                let arguments = await arguments()
                await serve(arguments, loggingReady: loggingReady, executables: prepared.refreshedIfIncomplete())
                exit(0)
            }
        }
    }

    /// `loggingReady`: the fork server bootstrapped logging before it forked this worker.
    static func serve(_ arguments: WorkerArguments, loggingReady: Bool = false, executables: Executables) async {
        let networkID = arguments.networkID
        SignalHandling.ignoreBrokenPipe()
        let signals = SignalHandling.terminationRequests()
        if !loggingReady { LogSetup.bootstrap(level: arguments.logLevel) }
        let logger = Logger(label: LogSetup.label(networkID: networkID))
        let current = CurrentLink()
        let worker = Worker(
            networkID: networkID, executables: executables, logger: logger,
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
