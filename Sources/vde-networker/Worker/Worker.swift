#if canImport(Glibc)
import Glibc
#endif
import Logging
import Shared

/// Requests that cannot be served in the worker's current state.
struct WorkerStateError: ReportableError, CustomStringConvertible {
    var vdeError: VDEError
    var description: String { vdeError.message }

    static let notStarted = WorkerStateError(vdeError: .unavailable("the worker has no switch yet: send start first"))
    static let shuttingDown = WorkerStateError(vdeError: .unavailable("the worker is shutting down"))
    static func missingField(_ field: String, of op: WorkerOperation) -> WorkerStateError {
        WorkerStateError(vdeError: .invalid("\(op.rawValue) needs the field '\(field)'"))
    }
}

/// The state of one network: its switch, its endpoints and their plugs.
///
/// Operations that change state pass one at a time through a ``SerialGate``; `ping` and `status`
/// do not, so they answer while, say, an `addEndpoint` waits for its plug. Child exits and the tap
/// watcher act on the actor directly and recognise stale news by comparing process identities.
actor Worker {
    enum SwitchState: Equatable {
        case notStarted
        case running
        /// The owned switch exited and is being restarted.
        case restarting
        case stopped
    }

    let networkID: NetworkID
    let executables: Executables
    let logger: Logger
    let runner: CommandRunner
    let taps: Taps
    /// Sends an event line to the supervisor.
    let emit: @Sendable (WorkerMessage) -> Void

    var spec: SwitchSpec?
    /// True when this worker started the switch (and stops and removes it).
    var owned = false
    /// The switch's directories and the names the worker may remove there (set by `start`).
    var switchFiles: SwitchFiles?
    /// `<network dir>/switch.pid`, written while a switch this worker started runs.
    var switchPIDFile: SwitchPIDFile?
    var switchProcess: SwitchProcess?
    var switchState = SwitchState.notStarted
    var switchBackoff = RestartBackoff()
    /// Ports the switch really offers (`port/showinfo`), when the management socket tells.
    var usablePorts: Int?
    var endpoints: [EndpointID: ManagedEndpoint] = [:]
    /// Directories this worker created (outermost first), removed at shutdown when empty.
    var createdDirectories: [String] = []
    var pidFiles: PlugPIDFiles?
    var tapMarkers: TapMarkers?
    /// `creating/<tap>`: taps being made for an endpoint not yet recorded (see ``deleteMarkedTaps(_:keeping:what:)``).
    var tapCreations: TapMarkers?
    /// Background deletions of removed endpoints' taps, by tap name (see ``TapMarkers``).
    var tapDeletions: [TapName: Task<Void, Never>] = [:]
    var gate = SerialGate()
    var shuttingDown = false
    var shutdownTask: Task<Void, Never>?
    var watchTask: Task<Void, Never>?
    var restartTasks: [Task<Void, Never>] = []

    init(networkID: NetworkID, executables: Executables, logger: Logger, emit: @escaping @Sendable (WorkerMessage) -> Void) {
        self.networkID = networkID
        self.executables = executables
        self.logger = logger
        self.runner = CommandRunner(logger: logger)
        self.taps = Taps(ip: executables.ip, runner: CommandRunner(logger: logger))
        self.emit = emit
    }

    // MARK: Dispatch

    /// Serves one request and returns its reply (a failure reply for any error).
    func handle(_ request: WorkerRequest) async -> WorkerMessage {
        do {
            let result: WorkerResult
            switch request.op {
            case .ping:
                result = WorkerResult()
            case .status:
                result = await status()
            case .start:
                guard let spec = request.switch else { throw WorkerStateError.missingField("switch", of: .start) }
                result = try await exclusively { try await start(spec: spec, restoring: request.endpoints ?? []) }
            case .addEndpoint:
                guard let endpoint = request.endpoint else { throw WorkerStateError.missingField("endpoint", of: .addEndpoint) }
                result = try await exclusively { try await addEndpoint(endpoint) }
            case .joinEndpoint:
                guard let id = request.endpointID else { throw WorkerStateError.missingField("endpointID", of: .joinEndpoint) }
                guard let key = request.sandboxKey else { throw WorkerStateError.missingField("sandboxKey", of: .joinEndpoint) }
                let (endpoint, sandbox) = try (EndpointID(id), SandboxKey(key))
                result = try await exclusively { try await joinEndpoint(endpoint, sandboxKey: sandbox) }
            case .leaveEndpoint:
                guard let id = request.endpointID else { throw WorkerStateError.missingField("endpointID", of: .leaveEndpoint) }
                let endpoint = try EndpointID(id)
                result = try await exclusively { try await leaveEndpoint(endpoint) }
            case .removeEndpoint:
                guard let id = request.endpointID else { throw WorkerStateError.missingField("endpointID", of: .removeEndpoint) }
                let endpoint = try EndpointID(id)
                result = try await exclusively { try await removeEndpoint(endpoint) }
            case .shutdown:
                let final = switchStatus()
                await shutdown(reason: "shutdown request")
                result = WorkerResult(switch: final)
            }
            return .reply(to: request.id, result: result)
        } catch {
            let failure = VDEError(wrapping: error)
            logger.warning("\(request.op.rawValue) failed: \(failure.message)", metadata: ["id": "\(request.id)", "code": "\(failure.code.rawValue)"])
            return .failure(of: request.id, failure)
        }
    }

    /// Runs `body` once every earlier state-changing operation has finished.
    func exclusively<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        guard !shuttingDown else { throw WorkerStateError.shuttingDown }
        if !gate.tryAcquire() {
            await withCheckedContinuation { gate.enqueue($0) }
        }
        defer { gate.release() }
        guard !shuttingDown else { throw WorkerStateError.shuttingDown }
        return try await body()
    }

    // MARK: Start

    func start(spec requested: SwitchSpec, restoring: [EndpointSpec]) async throws -> WorkerResult {
        if let spec {
            guard spec == requested else {
                throw VDEError.conflict("the worker already runs the switch at \(spec.paths.ctlDir) (mode \(spec.mode.rawValue)); it cannot switch to \(requested.paths.ctlDir)")
            }
            return WorkerResult(switch: switchStatus(), endpoints: sortedStatuses())
        }
        let spec = requested
        // Every per-network path comes from the spec: the supervisor computed it once.
        let pidFiles = PlugPIDFiles(directory: spec.paths.networkDir + "/plugs")
        self.pidFiles = pidFiles
        let leftovers = await pidFiles.stopLeftovers(logger: logger)
        tapMarkers = TapMarkers(directory: spec.paths.networkDir + "/deleting")
        await deleteMarkedTaps(tapMarkers, keeping: Set(restoring.map(\.tapName)), what: "an endpoint removed before the last worker stopped")
        switchFiles = SwitchFiles(spec: spec, networkID: networkID)
        let switchPIDFile = SwitchPIDFile(networkDir: spec.paths.networkDir)
        self.switchPIDFile = switchPIDFile
        await switchPIDFile.stopLeftover(logger: logger)
        tapCreations = TapMarkers(directory: spec.paths.networkDir + "/creating")
        await deleteMarkedTaps(tapCreations, keeping: Set(restoring.map(\.tapName)), what: "an endpoint whose creation did not finish")

        // Set first: a switch that dies right after it came up is restarted with this spec.
        self.spec = spec
        do {
            try await bringUpSwitch(spec)
        } catch {
            self.spec = nil
            throw error
        }
        // An owned switch is `.running` since `adopt` (or `.restarting`, if it died meanwhile).
        if switchState == .notStarted { switchState = .running }
        if let management = managementClient() {
            do {
                usablePorts = try await management.usablePorts()
            } catch {
                logger.warning("\(error)")
            }
        }
        for pid in leftovers { await releasePort(of: pid) }

        // Reply now: the endpoints are restored concurrently after the reply, each reported by
        // an `endpointState` event, so that no number of endpoints can exceed start's timeout.
        let restoring = beginRestore(restoring)
        startTapWatch()
        return WorkerResult(switch: switchStatus(), endpoints: restoring)
    }

    /// Starts, or finds, the switch as `spec.mode` says.
    private func bringUpSwitch(_ spec: SwitchSpec) async throws {
        switch spec.mode {
        case .own:
            try await startOwnedSwitch(spec)
        case .useOrCreate:
            switch await SwitchProbe.probe(ctlDir: spec.paths.ctlDir) {
            case .answers:
                logger.info("using the switch that answers at \(spec.paths.ctlDir)")
            case .noReply:
                throw SwitchError.noPort(ctlDir: spec.paths.ctlDir)
            case .absent:
                if spec.paths.managementSocket == nil {
                    logger.warning("starting a switch without a management socket: no counters, and full ports show only through a probe")
                }
                try await startOwnedSwitch(spec)
            }
        case .external:
            switch await SwitchProbe.probe(ctlDir: spec.paths.ctlDir) {
            case .answers:
                logger.info("using the external switch at \(spec.paths.ctlDir)")
            case .noReply:
                throw SwitchError.noPort(ctlDir: spec.paths.ctlDir)
            case .absent(let code):
                throw SwitchError.notAnswering(ctlDir: spec.paths.ctlDir, errno: code)
            }
        }
    }

    /// Starts vde_switch at the spec's ctl dir, after checking that no switch is there already and
    /// that the directories are the plugin's to use (see ``SwitchDirectory``).
    func startOwnedSwitch(_ spec: SwitchSpec) async throws {
        var probe = await SwitchProbe.probe(ctlDir: spec.paths.ctlDir)
        if probe == .answers {
            // The switch of a worker that was just killed exits at EOF on its stdin; give it a moment.
            let deadline = ContinuousClock.now + .seconds(1)
            while probe == .answers, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(50))
                probe = await SwitchProbe.probe(ctlDir: spec.paths.ctlDir)
            }
        }
        switch probe {
        case .absent: break
        case .answers, .noReply: throw SwitchError.alreadyRunning(ctlDir: spec.paths.ctlDir)
        }
        let files = switchFiles ?? SwitchFiles(spec: spec, networkID: networkID)
        let prepared = try files.prepare(logger: logger)
        let process: SwitchProcess
        do {
            process = try await SwitchProcess.start(files: files, executables: executables, logger: logger)
        } catch {
            // What this attempt took goes back: no new marker, no new directory stays.
            prepared.undo()
            throw error
        }
        createdDirectories += prepared.created
        adopt(process)
    }

    /// Makes `process` the network's switch and watches it.
    func adopt(_ process: SwitchProcess) {
        switchProcess = process
        switchState = .running
        owned = true
        switchPIDFile?.write(pid: process.pid, logger: logger)
        switchBackoff.started()
        process.child.onExit { [weak self] exit in
            Task { await self?.switchExited(process, exit: exit) }
        }
    }

    // MARK: Status

    func managementClient(timeout: Duration = .seconds(1)) -> ManagementClient? {
        spec?.paths.managementSocket.map { ManagementClient(socketPath: $0, timeout: timeout) }
    }

    func switchStatus() -> SwitchStatus? {
        guard let spec else { return nil }
        return SwitchStatus(ctlDir: spec.paths.ctlDir, managementSocket: spec.paths.managementSocket, owned: owned,
                            pid: owned ? switchProcess?.pid : nil, numPorts: usablePorts ?? spec.numPorts)
    }

    func sortedStatuses() -> [EndpointStatus] {
        endpoints.keys.sorted().compactMap { endpoints[$0]?.status() }
    }

    /// The switch, every endpoint with its port counters, and the ports that are not ours.
    /// Answers within about a second even when the management socket hangs (counters are then absent).
    func status() async -> WorkerResult {
        guard let status = switchStatus() else { return WorkerResult() }
        var ports: [PortCounters]?
        if switchState == .running, let management = managementClient(timeout: .milliseconds(800)) {
            do {
                ports = try await management.ports()
            } catch {
                logger.debug("no counters: \(error)")
            }
        }
        // Taken after the await: endpoints may have changed meanwhile.
        var ours = Set<Int>()
        let statuses = endpoints.keys.sorted().compactMap { id -> EndpointStatus? in
            guard let endpoint = endpoints[id] else { return nil }
            let counters = endpoint.plug.flatMap { plug in ports?.first { $0.peerPID == plug.pid } }
            if let counters { ours.insert(counters.port) }
            return endpoint.status(counters: counters)
        }
        return WorkerResult(switch: status, endpoints: statuses, otherPorts: ports?.filter { !ours.contains($0.port) })
    }

    // MARK: Shutdown

    /// Stops every plug, and the switch if this worker owns it, then removes what it created.
    /// Idempotent: a second call waits for the first.
    func shutdown(reason: String) async {
        if let shutdownTask {
            await shutdownTask.value
            return
        }
        shuttingDown = true
        let task = Task { await self.performShutdown(reason: reason) }
        shutdownTask = task
        await task.value
    }

    private func performShutdown(reason: String) async {
        logger.info("shutting down (\(reason))")
        // Let an operation in progress finish; later ones see `shuttingDown` and fail.
        if !gate.tryAcquire() {
            await withCheckedContinuation { gate.enqueue($0) }
        }
        watchTask?.cancel()
        for task in restartTasks { task.cancel() }
        let plugs = endpoints.compactMap { id, endpoint in endpoint.plug.map { (id, $0) } }
        for id in endpoints.keys {
            endpoints[id]?.plug = nil
            endpoints[id]?.state = .unplugged
        }
        await withTaskGroup(of: Void.self) { group in
            for (_, plug) in plugs {
                group.addTask { await plug.child.terminate(grace: .milliseconds(500)) }
            }
        }
        for (id, plug) in plugs {
            pidFiles?.remove(endpointID: id)
            logger.info("plug stopped", metadata: ["endpoint": "\(id)", "pid": "\(plug.pid)"])
        }
        if owned, let switchFiles {
            if let switchProcess {
                await switchProcess.stop(logger: logger)
                logger.info("switch stopped", metadata: ["pid": "\(switchProcess.pid)"])
            } else {
                switchFiles.removeLeftovers(logger: logger)
            }
            switchPIDFile?.remove()
            // The switch's own names are gone; the markers go last, then the directories if empty.
            switchFiles.release(logger: logger)
        }
        switchProcess = nil
        switchState = .stopped
        pidFiles?.removeDirectoryIfEmpty()
        await waitForTapDeletions()
        tapMarkers?.removeDirectoryIfEmpty()
        tapCreations?.removeDirectoryIfEmpty()
        removeCreatedDirectories()
    }

    /// Removes, innermost first, the directories this worker created and the network's own run
    /// dir (a directory only vde-supervisor uses), each only when empty.
    private func removeCreatedDirectories() {
        var candidates = createdDirectories.reversed().map { $0 }
        if let networkDir = spec?.paths.networkDir, !candidates.contains(networkDir) { candidates.append(networkDir) }
        for directory in candidates where FileSystem.listDirectory(directory)?.isEmpty == true {
            FileSystem.removeDirectory(directory)
        }
    }
}
