import CLinux
import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// `vde-networker --fork-server`: the one process per supervisor that forks its workers
/// (docs/worker-protocol.md, "The fork server"; the protocol is ``ForkServerProtocol``).
///
/// Why: a worker started by exec pays for its own copy of everything a Swift process writes
/// while it starts and runs its first requests (relocated `.data`, the runtime's metadata caches
/// in `.bss`, the heap); a worker forked from a process that has done that shares those pages
/// with it and with every other worker until one of them writes to a page. Forking also skips
/// the exec and the runtime's start in `docker network create` (docs/benchmarks.md, "The fork
/// server").
///
/// The server never starts a thread (fork copies only the calling thread: a lock another thread
/// held would stay locked in the child) and never starts a task: it reads requests from stdin
/// (a seqpacket socket from the supervisor) in a blocking loop, and exits at the end of input,
/// when the supervisor closes its end or exits. A forked worker is detached from the server
/// (``clinux_fork_detached_worker``): the supervisor, a child subreaper, becomes its parent and
/// gets its pidfd in the reply.
enum ForkServer {
    /// What ``run(executable:logLevel:runDir:)`` returns in a forked process.
    enum Forked {
        /// A worker forked for a request: its network is known, its command line rewritten,
        /// stdin and stdout its link's.
        case worker(WorkerArguments)
        /// The spare, forked before the request it serves (see ``Spare``): it learns its network
        /// from ``assignment()``.
        case spare(Spare.Assignee)

        /// The worker's arguments; a spare first waits for its network (and exits at the end of
        /// its input: the server is gone).
        func arguments() async -> WorkerArguments {
            switch self {
            case .worker(let arguments): arguments
            case .spare(let assignee): await assignee.assignment()
            }
        }
    }

    /// Serves requests until the end of input (then exits). Returns only in a forked process: a
    /// worker, or the spare that will be one.
    static func run(executable: String, logLevel: Logger.Level, runDir: String) -> Forked {
        SignalHandling.ignoreBrokenPipe()
        LogSetup.bootstrap(level: logLevel)
        let logger = Logger(label: "vde-networker[fork-server]")
        warmUp(executable: executable, logLevel: logLevel)
        let identity = Spare.Assignee(executable: executable, logLevel: logLevel, runDir: runDir)
        logger.debug("fork server ready", metadata: ["pid": "\(getpid())"])
        var spare: Spare?
        while true {
            if spare == nil, isSingleThreaded(logger: logger) {
                switch Spare.fork(identity, logger: logger) {
                case .inSpare(let assignee): return .spare(assignee)
                case .made(let made): spare = made
                case .failed: break
                }
            }
            let request: DescriptorMessages.Message
            do {
                guard let message = try DescriptorMessages.receive(on: 0, capacity: ForkServerProtocol.maxRequestBytes)
                else {
                    spare?.retire()
                    logger.debug("fork server exits (end of input: the supervisor is gone)")
                    exit(0)
                }
                request = message
            } catch {
                logger.error("fork server exits: cannot read requests: \(error)")
                exit(1)
            }
            let networkID = try? NetworkID(String(decoding: request.bytes, as: UTF8.self))
            guard let networkID, request.descriptors.count == 2 else {
                logger.warning(
                    "refused a malformed fork request (\(request.bytes.count) bytes, \(request.descriptors.count) descriptors)"
                )
                request.closeDescriptors()
                reply(ForkServerProtocol.Reply(pid: 0, errno: EINVAL), pidfd: nil, logger: logger)
                continue
            }
            if let current = spare {
                spare = nil
                defer { current.close() }
                if current.isRunning {
                    // The reply first: the spare, woken by its request, takes this CPU from the
                    // server at once (the scheduler favours a task that slept), and the reply
                    // then waited for the new worker's start (0.4 ms under strace).
                    reply(ForkServerProtocol.Reply(pid: current.pid, errno: 0), pidfd: current.pidfd, logger: logger)
                    if !current.assign(request) {
                        // Gone since: the supervisor sees the worker exit (its pidfd) and the link end.
                        logger.warning(
                            "the spare worker \(current.pid) exited before it got network \(networkID.short)")
                    }
                    request.closeDescriptors()
                    continue
                }
                logger.debug("the spare worker \(current.pid) is gone; forking one for network \(networkID.short)")
            }
            guard isSingleThreaded(logger: logger) else {
                request.closeDescriptors()
                reply(ForkServerProtocol.Reply(pid: 0, errno: EDEADLK), pidfd: nil, logger: logger)
                continue
            }
            var pid: Int32 = 0
            var pidfd: Int32 = -1
            let forked = clinux_fork_detached_worker(request.descriptors[0], request.descriptors[1], &pid, &pidfd)
            if forked == 0 {
                // The worker: stdin and stdout are its link's, nothing else of the server's is open.
                ProcessCommandLine.replace(
                    with: ForkServerProtocol.workerArguments(
                        executable: executable, networkID: networkID, logLevel: logLevel.rawValue, runDir: runDir,
                        forked: true))
                return .worker(WorkerArguments(networkID: networkID, logLevel: logLevel))
            }
            request.closeDescriptors()
            if forked > 0 {
                reply(ForkServerProtocol.Reply(pid: pid, errno: 0), pidfd: pidfd, logger: logger)
                close(pidfd)
            } else {
                logger.warning("cannot fork a worker for network \(networkID.short): \(SystemCallError.text(-forked))")
                reply(ForkServerProtocol.Reply(pid: 0, errno: -forked), pidfd: nil, logger: logger)
            }
        }
    }

    /// Fork copies only the calling thread: a second one (started by mistake in the server)
    /// could hold a lock the worker then never gets. So the server forks only while it runs one.
    private static func isSingleThreaded(logger: Logger) -> Bool {
        let threads = FileSystem.listDirectory("/proc/self/task")?.count ?? 0
        guard threads == 1 else {
            logger.error("refusing to fork: the fork server runs \(threads) threads, not 1")
            return false
        }
        return true
    }

    private static func reply(_ reply: ForkServerProtocol.Reply, pidfd: Int32?, logger: Logger) {
        do {
            try DescriptorMessages.send(
                DescriptorMessages.Message(bytes: reply.bytes, descriptors: pidfd.map { [$0] } ?? []), on: 0)
        } catch {
            // The supervisor is gone: a worker forked for it reads the end of its input and exits.
            logger.debug("fork server exits: cannot reply: \(error)")
            exit(0)
        }
    }

    /// Runs, once, what every worker runs first: the JSON coding of each kind of request it is
    /// sent and of each reply and event it sends (the coders' and the message types' metadata
    /// and caches), and a worker's construction, so that forked workers share those pages
    /// instead of each filling its own. Only code that starts no thread and no task belongs here.
    /// (Running a worker's requests too, on this thread with an inline executor, saved nothing
    /// more: 569 vs 573 kB per worker at 100 networks. The `.bss` pages a worker still makes
    /// its own are most likely written by every metadata lookup, whose caches count their
    /// readers in place.)
    static func warmUp(executable: String, logLevel: Logger.Level) {
        let id = String(repeating: "0", count: 64)
        let dir = "/nonexistent/vde-fork-server-warm-up"
        let endpoint = #""endpointID":"\#(id)""#
        let status =
            #"{"status":{\#(endpoint),"macAddress":"02:00:00:00:00:01","plugPID":2,"port":1,"state":"plugged","tapName":"vde000000000000"}}"#
        let switchStatus =
            #"{"ctlDir":"\#(dir)/ctl","managementSocket":"\#(dir)/mgmt","numPorts":32,"owned":true,"pid":2}"#
        let requests = [
            #"{"command":{"start":{"restore":[],"switch":{"ctlDir":"\#(dir)/ctl","managementSocket":"\#(dir)/mgmt","mode":"own","networkDir":"\#(dir)","numPorts":32}}},"id":1,"v":\#(WorkerProtocol.version)}"#,
            #"{"command":{"addEndpoint":{"endpoint":{\#(endpoint),"ipv4Address":"10.0.0.2","macAddress":"02:00:00:00:00:01","tapName":"vde000000000000"}}},"id":2,"v":\#(WorkerProtocol.version)}"#,
            #"{"command":{"joinEndpoint":{\#(endpoint),"sandboxKey":"\#(dir)/sandbox"}},"id":3,"v":\#(WorkerProtocol.version)}"#,
            #"{"command":{"leaveEndpoint":{\#(endpoint)}},"id":4,"v":\#(WorkerProtocol.version)}"#,
            #"{"command":{"removeEndpoint":{\#(endpoint)}},"id":5,"v":\#(WorkerProtocol.version)}"#,
            #"{"command":{"ping":{}},"id":6,"v":\#(WorkerProtocol.version)}"#,
            #"{"command":{"shutdown":{}},"id":7,"v":\#(WorkerProtocol.version)}"#,
        ]
        for line in requests { _ = IncomingLine.decode(Array(line.utf8)) }
        let messages = [
            #"{"event":{"hello":{"detail":"warm-up","pid":2}},"v":\#(WorkerProtocol.version)}"#,
            #"{"id":1,"reply":{"started":{"endpoints":[],"switch":\#(switchStatus)}},"v":\#(WorkerProtocol.version)}"#,
            #"{"id":2,"reply":{"endpoint":\#(status)},"v":\#(WorkerProtocol.version)}"#,
            #"{"id":5,"reply":{"removed":{}},"v":\#(WorkerProtocol.version)}"#,
            #"{"id":6,"reply":{"pong":{}},"v":\#(WorkerProtocol.version)}"#,
            #"{"id":7,"reply":{"stopped":{"switch":\#(switchStatus)}},"v":\#(WorkerProtocol.version)}"#,
        ]
        for line in messages {
            guard let message = try? JSONCoding.decode(WorkerMessage.self, from: Array(line.utf8)) else { continue }
            _ = try? JSONCoding.encode(message)
        }
        // libvdeplug's probe of the switch looks up the user (getpwuid): glibc's NSS state.
        _ = getpwuid(geteuid())
        // And its `vde` module, loaded here once instead of at each probe of each worker, and
        // its interrupt handler, which forked workers inherit.
        SwitchProbe.prepare()
        // Found before any child rewrites its command line there.
        _ = ProcessCommandLine.area
        if let networkID = try? NetworkID(id) {
            let logger = Logger(label: LogSetup.label(networkID: networkID))
            _ = Worker(networkID: networkID, executables: .resolve(), logger: logger, emit: { _ in })
        }
    }
}
