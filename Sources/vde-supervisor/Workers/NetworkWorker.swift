import Logging
import Shared

/// Keeps the worker process of one network running: starts it, hands it the network to
/// restore, and brings it back with backoff when it exits unexpectedly or stops answering.
///
/// The supervisor talks to a worker only through the typed methods here (``addEndpoint(_:)``,
/// ``join(_:sandboxKey:)``, ...): each sends one ``WorkerCommand`` and returns what its
/// ``WorkerReply`` carries.
actor NetworkWorker {
    /// What the worker of a network is doing, as `status` shows it.
    enum Phase: String, Codable, Sendable {
        case starting, running, restarting, stopping, stopped
    }

    /// What a (re)started worker must bring up: the switch and the endpoints to restore.
    struct Assignment: Sendable {
        var switchSpec: SwitchSpec
        var endpoints: [EndpointSpec]
    }

    let networkID: NetworkID
    private let executable: String
    private let runDir: String
    private let logLevel: Logger.Level
    private let forkServer: WorkerForkServer?
    private var logger: Logger
    /// Reads the network's current assignment from the plugin's state; nil once it is deleted.
    private let assignment: @Sendable () async -> Assignment?
    /// Told about every (re)start: what the worker's reply to `start` carries.
    private let onStarted: @Sendable (Started) async -> Void
    private let onEvent: @Sendable (WorkerEvent) async -> Void

    private(set) var phase: Phase = .starting
    private(set) var restarts = 0
    private(set) var lastError: String?
    private(set) var startedAt: ContinuousClock.Instant?
    private var link: WorkerLink?
    private var linkTask: Task<String, Never>?
    private var stopRequested = false
    private var readyWaiters: [CheckedContinuation<Void, Never>] = []
    /// Delays between restarts. Only a run of a minute, from a successful start to its exit,
    /// makes the worker healthy again; failed restarts never do.
    private var backoff: RestartBackoff

    static let startTimeout: Duration = .seconds(15)
    static let requestTimeout: Duration = .seconds(15)
    /// A liveness check (``checkAlive()``) pings with this limit; `missedHeartbeatLimit` missed
    /// pings in a row mean the worker is stuck, and it is killed (and so restarted).
    static let heartbeatTimeout: Duration = .seconds(2)
    static let missedHeartbeatLimit = 3
    /// A liveness check is under way (one at a time).
    private var checking = false
    /// How long each ping of a liveness check waits (``heartbeatTimeout``; tests make it short).
    private let pingTimeout: Duration

    init(
        networkID: NetworkID, executable: String, runDir: String, logLevel: Logger.Level,
        forkServer: WorkerForkServer? = nil, logger: Logger,
        assignment: @escaping @Sendable () async -> Assignment?,
        onStarted: @escaping @Sendable (Started) async -> Void,
        onEvent: @escaping @Sendable (WorkerEvent) async -> Void,
        backoff: RestartBackoff = .worker, pingTimeout: Duration = NetworkWorker.heartbeatTimeout
    ) {
        self.networkID = networkID
        self.pingTimeout = pingTimeout
        self.backoff = backoff
        self.executable = executable
        self.runDir = runDir
        self.logLevel = logLevel
        self.forkServer = forkServer
        var logger = logger
        logger[metadataKey: "network"] = "\(networkID.short)"
        self.logger = logger
        self.assignment = assignment
        self.onStarted = onStarted
        self.onEvent = onEvent
    }

    var workerPID: Int32? { get async { await link?.pid } }

    /// What `status` shows of the worker, read in one visit to this actor (a report of 1000
    /// networks reads them all concurrently instead of five awaits per network in turn).
    struct Summary: Sendable {
        var phase: Phase
        var pid: Int32?
        var restarts: Int
        var lastError: String?
        var startedAt: ContinuousClock.Instant?
    }

    func summary() async -> Summary {
        Summary(phase: phase, pid: await link?.pid, restarts: restarts, lastError: lastError, startedAt: startedAt)
    }

    /// Starts the worker and waits until its switch is ready. A failure of this first start
    /// is thrown (CreateNetwork reports it) and nothing is left running.
    func start(_ assignment: Assignment) async throws -> Started {
        do {
            let result = try await launch(assignment)
            becameReady()
            return result
        } catch {
            stopRequested = true
            phase = .stopped
            becameReady()
            throw error
        }
    }

    /// Starts the worker of a network restored from the state. Unlike ``start(_:)``, a failure
    /// is not final: the network exists in Docker either way, so the worker is retried with
    /// backoff like a crashed one. Returns after the first attempt.
    func restore(_ assignment: Assignment) async {
        do {
            _ = try await launch(assignment)
        } catch {
            logger.error(
                "could not restore network; retrying with backoff",
                metadata: [
                    "error": "\(VDEError(wrapping: error).message)"
                ])
            phase = .restarting
            Task { await self.restartLoop() }
        }
        becameReady()
    }

    /// What a worker's reply to `start` carries: its switch, and the endpoints it restores
    /// (`restarting`; each outcome follows as an `endpointState` event).
    struct Started: Sendable, Equatable {
        var switchStatus: SwitchStatus
        var endpoints: [EndpointStatus]
        /// The endpoints the worker was handed to restore, as the assignment was read when the
        /// launch began: a link recorded after that reaches the worker by `setLink` (see
        /// ``VDEPlugin/resendChangedLinks(_:of:)``).
        var handed: [EndpointSpec] = []
    }

    // MARK: commands

    /// Makes the endpoint's tap and plugs it into the switch.
    func addEndpoint(_ endpoint: EndpointSpec) async throws -> EndpointStatus {
        let command = WorkerCommand.addEndpoint(endpoint: endpoint)
        guard case .endpoint(let status) = try await send(command) else { throw Self.unexpectedReply(to: command) }
        return status
    }

    /// Records the container's namespace (and plugs an endpoint that had left).
    func join(_ endpointID: EndpointID, sandboxKey: SandboxKey) async throws -> EndpointStatus {
        let command = WorkerCommand.joinEndpoint(endpointID: endpointID, sandboxKey: sandboxKey)
        guard case .endpoint(let status) = try await send(command) else { throw Self.unexpectedReply(to: command) }
        return status
    }

    /// Stops the endpoint's plug (the container leaves).
    func leave(_ endpointID: EndpointID) async throws -> EndpointStatus {
        let command = WorkerCommand.leaveEndpoint(endpointID: endpointID)
        guard case .endpoint(let status) = try await send(command) else { throw Self.unexpectedReply(to: command) }
        return status
    }

    /// Stops the endpoint's plug and deletes its tap; idempotent (an unknown endpoint is no error).
    func removeEndpoint(_ endpointID: EndpointID) async throws {
        let command = WorkerCommand.removeEndpoint(endpointID: endpointID)
        guard case .removed = try await send(command) else { throw Self.unexpectedReply(to: command) }
    }

    /// Gives the endpoint this link (impaired, cleared, cable pulled or plugged back), live.
    func setLink(_ endpointID: EndpointID, link: LinkSettings) async throws -> EndpointStatus {
        let command = WorkerCommand.setLink(endpointID: endpointID, link: link)
        guard case .endpoint(let status) = try await send(command) else { throw Self.unexpectedReply(to: command) }
        return status
    }

    /// Sets up a capture; returns the socket its command connects to.
    func startCapture(_ capture: CaptureSpec) async throws -> String {
        let command = WorkerCommand.startCapture(capture: capture)
        guard case .captureStarted(let socket) = try await send(command) else {
            throw Self.unexpectedReply(to: command)
        }
        return socket
    }

    /// The switch, the endpoints with their counters, and the ports that are not ours.
    func status(timeout: Duration) async throws -> WorkerStatus {
        guard case .status(let status) = try await send(.status, timeout: timeout) else {
            throw Self.unexpectedReply(to: .status)
        }
        return status
    }

    /// Sends a command once the worker runs (waiting for a restart in progress, within the
    /// timeout). A timeout also starts a liveness check: a worker that does not answer a
    /// command may hang, and one that hangs is found this way without a periodic ping.
    private func send(_ command: WorkerCommand, timeout: Duration = NetworkWorker.requestTimeout) async throws
        -> WorkerReply
    {
        if phase == .starting || phase == .restarting {
            await waitUntilReady(timeout: timeout)
        }
        guard phase == .running, let link else {
            throw VDEError.unavailable(
                "the worker of network \(networkID.short) is \(phase.rawValue)"
                    + (lastError.map { " (last error: \($0))" } ?? ""))
        }
        do {
            return try await link.send(command, timeout: timeout)
        } catch let timedOut as WorkerTimeout {
            Task { await self.checkAlive() }
            throw timedOut
        }
    }

    /// A reply of the wrong kind: the two sides disagree on the protocol (a bug; both come from one build).
    private static func unexpectedReply(to command: WorkerCommand) -> VDEError {
        VDEError(.internal, "the worker answered '\(command.kind.rawValue)' with a reply meant for another command")
    }

    // MARK: liveness

    /// Pings the worker; a missed ping is followed at once by another, and
    /// `missedHeartbeatLimit` missed in a row kill the worker, which restarts it. Called for one
    /// worker at a time by the plugin's ``HeartbeatSweep`` and after any command that timed
    /// out; a check already under way makes this a no-op.
    func checkAlive() async {
        guard !checking, let link, isCurrent(link) else { return }
        checking = true
        defer { checking = false }
        var missed = 0
        while isCurrent(link) {
            do {
                _ = try await link.send(.ping, timeout: pingTimeout)
                if missed > 0 { logger.notice("worker answers again", metadata: ["missed": "\(missed)"]) }
                return
            } catch is WorkerTimeout {
                guard isCurrent(link) else { return }
                missed += 1
                logger.warning("worker missed a heartbeat", metadata: ["missed": "\(missed)"])
                if missed >= Self.missedHeartbeatLimit {
                    lastError = "worker stopped answering (\(missed) heartbeats missed); killed"
                    logger.error("worker stopped answering; killing it so that it restarts")
                    await link.kill9()
                    return
                }
            } catch {
                // The worker exited: restarting it is `linkExited`'s business.
                return
            }
        }
    }

    /// Stops the worker: it stops its children and removes what it created. Waits for its exit,
    /// or with `awaitExit: false` only for its `stopped` reply, which it sends once its switch,
    /// plugs, taps and directories are gone: the process then only exits, and that is awaited
    /// (SIGKILL after 5 s, as always) in a task of its own. DeleteNetwork replies that much
    /// sooner: from the reply to seeing the exit (stdout's EOF, the pidfd, the reap) took about
    /// 4 ms of a 17 ms DeleteNetwork (bench/lib/controlplane.py's step table, issue 17). A worker
    /// that did not answer `shutdown` cleanly is terminated and its exit awaited either way.
    func stop(awaitExit: Bool = true) async {
        stopRequested = true
        phase = .stopping
        becameReady()
        guard let link, let task = linkTask else {
            phase = .stopped
            return
        }
        var clean = false
        do {
            guard case .stopped = try await link.send(.shutdown, timeout: .seconds(10)) else {
                throw Self.unexpectedReply(to: .shutdown)
            }
            clean = true
        } catch {
            logger.warning("worker did not shut down cleanly; terminating it", metadata: ["error": "\(error)"])
            await link.terminate()
        }
        phase = .stopped
        if clean && !awaitExit {
            Task { await self.ensureExited(link, task) }
        } else {
            await ensureExited(link, task)
        }
    }

    /// Leaves the worker running (supervisor SIGTERM): the link ends, and the worker waits on
    /// its socket for the next supervisor, which adopts it. Nothing is restarted after this.
    func detach() async {
        stopRequested = true
        phase = .stopped
        becameReady()
        await link?.detach()
    }

    // MARK: internals

    /// Starts a worker, or adopts the one that runs already (``WorkerAdoption``), and sends it
    /// `start`: a running worker answers it idempotently with what it runs now.
    private func launch(_ assignment: Assignment) async throws -> Started {
        let (networkID, paths, logger) = (networkID, assignment.switchSpec.paths, logger)
        // No socket file, nothing to adopt (every CreateNetwork): the stat is done here, and a
        // thread for the connect is made only when a socket is there.
        let running =
            FileSystem.isSocket(paths.workerSocket)
            ? await Blocking.run { WorkerAdoption.connect(networkID: networkID, paths: paths, logger: logger) } : nil
        let link = WorkerLink(
            networkID: networkID, executable: executable, runDir: runDir, logLevel: logLevel, logger: logger,
            connection: running.map { .adopted($0.0, $0.1) } ?? .spawn, forkServer: forkServer, onEvent: onEvent)
        self.link = link
        let task = Task { await link.run() }
        linkTask = task
        Task { [weak self] in
            let ending = await task.value
            await self?.linkExited(link, ending: ending)
        }
        do {
            let command = WorkerCommand.start(switch: assignment.switchSpec, restore: assignment.endpoints)
            guard
                case .started(let switchStatus, let endpoints) = try await link.send(
                    command, timeout: Self.startTimeout)
            else {
                throw Self.unexpectedReply(to: command)
            }
            let result = Started(switchStatus: switchStatus, endpoints: endpoints, handed: assignment.endpoints)
            phase = .running
            startedAt = .now
            backoff.started()
            let pid = await link.pid
            logger.info(
                running == nil ? "network up" : "network adopted",
                metadata: [
                    "ctl": "\(assignment.switchSpec.paths.ctlDir)", "endpoints": "\(assignment.endpoints.count)",
                    "workerPID": "\(pid.map(String.init) ?? "?")",
                ])
            if running != nil { removeUnrecorded(result.endpoints, keeping: assignment.endpoints, on: link) }
            await onStarted(result)
            return result
        } catch {
            lastError = VDEError(wrapping: error).message
            await link.terminate()
            await ensureExited(link, task)
            throw error
        }
    }

    /// An adopted worker may run endpoints the state does not record: an add whose reply the
    /// killed supervisor never recorded. They are undone as a failed add is (`removeEndpoint`,
    /// idempotent), in the background: the worker queues it behind what it does now.
    private func removeUnrecorded(_ running: [EndpointStatus], keeping recorded: [EndpointSpec], on link: WorkerLink) {
        let recordedIDs = Set(recorded.map(\.endpointID))
        let unrecorded = running.map(\.endpointID).filter { !recordedIDs.contains($0) }
        guard !unrecorded.isEmpty else { return }
        let logger = logger
        Task {
            for endpointID in unrecorded {
                logger.notice(
                    "the adopted worker runs an endpoint the state does not record; removing it",
                    metadata: ["endpoint": "\(endpointID.short)"])
                do {
                    _ = try await link.send(.removeEndpoint(endpointID: endpointID), timeout: Self.requestTimeout)
                } catch {
                    logger.warning(
                        "could not remove an unrecorded endpoint",
                        metadata: ["endpoint": "\(endpointID.short)", "error": "\(error)"])
                }
            }
        }
    }

    private func isCurrent(_ candidate: WorkerLink) -> Bool {
        candidate === link && phase == .running && !stopRequested
    }

    private func linkExited(_ exitedLink: WorkerLink, ending: String) async {
        guard exitedLink === link else { return }
        if stopRequested { return }
        guard phase == .running else { return }  // a failed launch is handled where it happened
        phase = .restarting
        lastError = (lastError.map { $0 + "; " } ?? "") + "worker exited: \(ending)"
        logger.error("worker exited unexpectedly; restarting it", metadata: ["ending": "\(ending)"])
        await restartLoop()
    }

    private func restartLoop() async {
        while !stopRequested {
            let delay = backoff.nextDelay()
            if delay > .zero {
                logger.warning(
                    "restarting worker after backoff", metadata: ["delay": "\(delay)", "restarts": "\(restarts)"])
                try? await Task.sleep(for: delay)
            }
            if stopRequested { return }
            guard let assignment = await assignment() else {
                phase = .stopped
                becameReady()
                return
            }
            restarts += 1
            do {
                _ = try await launch(assignment)
                becameReady()
                return
            } catch {
                logger.error("worker restart failed", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            }
        }
    }

    private func becameReady() {
        let waiters = readyWaiters
        readyWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    private func waitUntilReady(timeout: Duration) async {
        let timer = Timeout.after(timeout) { await self.becameReady() }
        defer { timer.cancel() }
        await withCheckedContinuation { continuation in
            readyWaiters.append(continuation)
        }
    }

    /// Waits up to 5 s for the worker to exit (after a shutdown request or SIGTERM), then kills it.
    private func ensureExited(_ link: WorkerLink, _ task: Task<String, Never>) async {
        if await waitForExit(task, timeout: .seconds(5)) { return }
        logger.warning("worker still running; killing it")
        await link.kill9()
        _ = await task.value
    }

    /// True when `task` (the worker's run) ended within `timeout`. `task.value` does not end on
    /// cancellation, so the wait is on a stream that a helper task finishes: a race in a task group
    /// over `task.value` itself would wait for the worker's exit even after the timeout.
    private func waitForExit(_ task: Task<String, Never>, timeout: Duration) async -> Bool {
        let (ended, continuation) = AsyncStream<Void>.makeStream()
        Task {
            _ = await task.value
            continuation.finish()
        }
        return await Timeout.run(timeout) { () async -> Bool in
            for await _ in ended {}
            return true
        } ?? false
    }
}
