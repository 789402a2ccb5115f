import Logging
import Shared

/// Keeps the worker process of one network running: starts it, hands it the network to
/// restore, and brings it back with backoff when it exits unexpectedly.
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
    private var logger: Logger
    /// Reads the network's current assignment from the plugin's state; nil once it is deleted.
    private let assignment: @Sendable () async -> Assignment?
    /// Told about every (re)start: the worker's reply to `start`.
    private let onStarted: @Sendable (WorkerResult) async -> Void
    private let onEvent: @Sendable (WorkerMessage) async -> Void

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
    /// A running worker is pinged this often; `missedHeartbeatLimit` unanswered pings in a row
    /// mean it is stuck, and it is killed (and so restarted).
    static let heartbeatInterval: Duration = .seconds(2)
    static let heartbeatTimeout: Duration = .seconds(2)
    static let missedHeartbeatLimit = 3
    private var heartbeatTask: Task<Void, Never>?

    init(networkID: NetworkID, executable: String, runDir: String, logLevel: Logger.Level, logger: Logger,
         assignment: @escaping @Sendable () async -> Assignment?,
         onStarted: @escaping @Sendable (WorkerResult) async -> Void,
         onEvent: @escaping @Sendable (WorkerMessage) async -> Void,
         backoff: RestartBackoff = .worker) {
        self.networkID = networkID
        self.backoff = backoff
        self.executable = executable
        self.runDir = runDir
        self.logLevel = logLevel
        var logger = logger
        logger[metadataKey: "network"] = "\(networkID.short)"
        self.logger = logger
        self.assignment = assignment
        self.onStarted = onStarted
        self.onEvent = onEvent
    }

    var workerPID: Int32? { get async { await link?.pid } }

    /// Starts the worker and waits until its switch is ready. A failure of this first start
    /// is thrown (CreateNetwork reports it) and nothing is left running.
    func start(_ assignment: Assignment) async throws -> WorkerResult {
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
            logger.error("could not restore network; retrying with backoff", metadata: [
                "error": "\(VDEError(wrapping: error).message)",
            ])
            phase = .restarting
            Task { await self.restartLoop() }
        }
        becameReady()
    }

    /// Sends a request once the worker runs (waiting for a restart in progress, within the timeout).
    func request(_ request: WorkerRequest, timeout: Duration = NetworkWorker.requestTimeout) async throws -> WorkerResult {
        if phase == .starting || phase == .restarting {
            await waitUntilReady(timeout: timeout)
        }
        guard phase == .running, let link else {
            throw VDEError.unavailable("the worker of network \(networkID.short) is \(phase.rawValue)"
                + (lastError.map { " (last error: \($0))" } ?? ""))
        }
        return try await link.request(request, timeout: timeout)
    }

    /// Stops the worker: it stops its children and removes what it created. Waits for its exit.
    func stop() async {
        stopRequested = true
        heartbeatTask?.cancel()
        phase = .stopping
        becameReady()
        guard let link, let task = linkTask else {
            phase = .stopped
            return
        }
        do {
            _ = try await link.request(WorkerRequest(id: 0, op: .shutdown), timeout: .seconds(10))
        } catch {
            logger.warning("worker did not shut down cleanly; terminating it", metadata: ["error": "\(error)"])
            await link.terminate()
        }
        await ensureExited(link, task)
        phase = .stopped
    }

    // MARK: internals

    private func launch(_ assignment: Assignment) async throws -> WorkerResult {
        let link = WorkerLink(networkID: networkID, executable: executable, runDir: runDir, logLevel: logLevel, logger: logger,
                              onEvent: onEvent)
        self.link = link
        let task = Task { await link.run() }
        linkTask = task
        Task { [weak self] in
            let ending = await task.value
            await self?.linkExited(link, ending: ending)
        }
        do {
            let result = try await link.request(
                WorkerRequest(id: 0, op: .start, switch: assignment.switchSpec, endpoints: assignment.endpoints),
                timeout: Self.startTimeout)
            phase = .running
            startedAt = .now
            backoff.started()
            startHeartbeat(for: link)
            let pid = await link.pid
            logger.info("network up", metadata: [
                "ctl": "\(assignment.switchSpec.paths.ctlDir)", "endpoints": "\(assignment.endpoints.count)",
                "workerPID": "\(pid.map(String.init) ?? "?")",
            ])
            await onStarted(result)
            return result
        } catch {
            lastError = VDEError(wrapping: error).message
            await link.terminate()
            await ensureExited(link, task)
            throw error
        }
    }

    /// Pings the worker while it runs; kills it when it stops answering, which restarts it.
    private func startHeartbeat(for link: WorkerLink) {
        heartbeatTask?.cancel()
        heartbeatTask = Task { [weak self] in
            var missed = 0
            while !Task.isCancelled {
                do { try await Task.sleep(for: Self.heartbeatInterval) } catch { return }
                guard let self, await self.isCurrent(link) else { return }
                do {
                    _ = try await link.request(WorkerRequest(id: 0, op: .ping), timeout: Self.heartbeatTimeout)
                    missed = 0
                } catch {
                    missed += 1
                    await self.heartbeatMissed(missed, link: link)
                }
            }
        }
    }

    private func isCurrent(_ candidate: WorkerLink) -> Bool {
        candidate === link && phase == .running && !stopRequested
    }

    private func heartbeatMissed(_ count: Int, link: WorkerLink) async {
        guard isCurrent(link) else { return }
        logger.warning("worker missed a heartbeat", metadata: ["missed": "\(count)"])
        if count >= Self.missedHeartbeatLimit {
            lastError = "worker stopped answering (\(count) heartbeats missed); killed"
            logger.error("worker stopped answering; killing it so that it restarts")
            await link.kill9()
        }
    }

    private func linkExited(_ exitedLink: WorkerLink, ending: String) async {
        guard exitedLink === link else { return }
        if stopRequested { return }
        guard phase == .running else { return }  // a failed launch is handled where it happened
        phase = .restarting
        heartbeatTask?.cancel()
        lastError = (lastError.map { $0 + "; " } ?? "") + "worker exited: \(ending)"
        logger.error("worker exited unexpectedly; restarting it", metadata: ["ending": "\(ending)"])
        await restartLoop()
    }

    private func restartLoop() async {
        while !stopRequested {
            let delay = backoff.nextDelay()
            if delay > .zero {
                logger.warning("restarting worker after backoff", metadata: ["delay": "\(delay)", "restarts": "\(restarts)"])
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
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.becameReady()
        }
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

    private func waitForExit(_ task: Task<String, Never>, timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                _ = await task.value
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}
