import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Requests that cannot be served in the worker's current state.
struct WorkerStateError: ReportableError, CustomStringConvertible {
    var vdeError: VDEError
    var description: String { vdeError.message }

    static let notStarted = WorkerStateError(vdeError: .unavailable("the worker has no switch yet: send start first"))
    static let shuttingDown = WorkerStateError(vdeError: .unavailable("the worker is shutting down"))
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
    /// The switch, plugs, taps and namespaces the worker acts on (fakes in the unit tests).
    let host: WorkerHost
    var taps: any TapHost { host.taps }
    /// Sends an event line to the supervisor.
    let emit: @Sendable (WorkerEvent) -> Void

    var spec: SwitchSpec?
    /// True when this worker started the switch (and stops and removes it).
    var owned = false
    /// The switch's directories and the names the worker may remove there (set by `start`).
    var switchFiles: SwitchFiles?
    /// `<network dir>/switch.pid`, written while a switch this worker started runs.
    var switchPIDFile: SwitchPIDFile?
    var switchProcess: (any RunningSwitch)?
    var switchState = SwitchState.notStarted
    var switchBackoff = RestartBackoff()
    /// Ports the switch offers: those its command line gave a switch this worker started, else
    /// what `port/showinfo` tells (nil when it cannot be asked).
    var usablePorts: Int?
    var endpoints: [EndpointID: ManagedEndpoint] = [:]
    /// The network's uplink (Uplink/); nil when the spec has none.
    var uplink: ManagedUplink?
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
    /// Set by ``detach(reason:)``: nothing is watched any more, and nothing is stopped.
    var detached = false
    var shutdownTask: Task<Void, Never>?
    /// Polls the taps of plugs without a ``TapWatch``; nil while every plug is watched.
    var tapPollTask: Task<Void, Never>?
    var restartTasks: [Task<Void, Never>] = []
    /// The switch's external ports, and those its deaths cut off (Worker+ExternalPorts.swift).
    var externalPorts = ExternalPortsState()
    /// Captures (Capture/); nil until the first one.
    var captureEngine: CaptureEngine?
    /// True while the switch's capture plugin may be loaded (set before loading it).
    var capturePluginLoaded = false
    /// How long a capture's socket waits for its command (shorter in the unit tests).
    var captureConnectTimeout = Duration.seconds(WorkerProtocol.captureConnectTimeoutSeconds)

    /// `host`: nil for the real switch, plugs and taps (``WorkerHost/system(executables:logger:)``).
    init(
        networkID: NetworkID, executables: Executables, logger: Logger, host: WorkerHost? = nil,
        emit: @escaping @Sendable (WorkerEvent) -> Void
    ) {
        self.networkID = networkID
        self.executables = executables
        self.logger = logger
        self.runner = CommandRunner(logger: logger)
        self.host = host ?? .system(executables: executables, logger: logger)
        self.emit = emit
    }

    // MARK: Dispatch

    /// Serves one request and returns its reply (a failure reply for any error).
    func handle(_ request: WorkerRequest) async -> WorkerMessage {
        do {
            let reply: WorkerReply
            switch request.command {
            case .ping:
                reply = .pong
            case .status:
                reply = .status(report: await status())
            case .start(let spec, let restore):
                reply = try await exclusively { try await start(spec: spec, restoring: restore) }
            case .addEndpoint(let endpoint):
                reply = .endpoint(status: try await exclusively { try await addEndpoint(endpoint) })
            case .joinEndpoint(let id, let key):
                reply = .endpoint(status: try await exclusively { try await joinEndpoint(id, sandboxKey: key) })
            case .leaveEndpoint(let id):
                reply = .endpoint(status: try await exclusively { try await leaveEndpoint(id) })
            case .removeEndpoint(let id):
                try await exclusively { try await removeEndpoint(id) }
                reply = .removed
            case .setLink(let id, let link):
                reply = .endpoint(status: try await exclusively { try await setLink(id, link: link) })
            case .startCapture(let capture):
                reply = .captureStarted(socket: try await exclusively { try await startCapture(capture) })
            case .shutdown:
                let final = switchStatus()
                await shutdown(reason: "shutdown request")
                reply = .stopped(switch: final)
            }
            return .reply(id: request.id, reply)
        } catch {
            let failure = VDEError(wrapping: error)
            logger.warning(
                "\(request.command.kind.rawValue) failed: \(failure.message)",
                metadata: ["id": "\(request.id)", "code": "\(failure.code.rawValue)"])
            return .failure(id: request.id, failure)
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

    func start(spec requested: SwitchSpec, restoring: [EndpointSpec]) async throws -> WorkerReply {
        if let spec {
            guard spec == requested else {
                throw VDEError.conflict(
                    "the worker already runs the switch at \(spec.paths.ctlDir) (mode \(spec.mode.rawValue)); it cannot switch to \(requested.paths.ctlDir)"
                )
            }
            // A supervisor that adopts this worker: containers may have gone while none was linked.
            await dropEndpointsOfRemovedSandboxes()
            return .started(switch: switchStatus(of: spec), endpoints: sortedStatuses())
        }
        let spec = requested
        // Every per-network path comes from the spec: the supervisor computed it once.
        tapMarkers = TapMarkers(directory: spec.paths.deletingDir)
        await deleteMarkedTaps(
            tapMarkers, keeping: Set(restoring.map(\.tapName)),
            what: "an endpoint removed before the last worker stopped")
        let switchFiles = SwitchFiles(spec: spec, networkID: networkID)
        self.switchFiles = switchFiles
        self.switchPIDFile = SwitchPIDFile(path: spec.paths.switchPIDFile)
        // What an earlier worker of this network left running is adopted, not stopped: the
        // switch, and the plugs of the endpoints to restore (issue 11: the data path outlives
        // its managers). An external switch is never the plugin's to adopt.
        let leftoverSwitch: (any RunningSwitch)?
        if spec.mode == .external {
            await switchPIDFile?.stopLeftover(logger: logger)
            leftoverSwitch = nil
        } else {
            leftoverSwitch = await host.switches.adoptLeftover(files: switchFiles, logger: logger)
        }
        let pidFiles = PlugPIDFiles(directory: spec.paths.plugsDir)
        self.pidFiles = pidFiles
        var leftovers = await host.plugs.adoptLeftovers(
            pidFiles: pidFiles, restoring: restoring, paths: spec.paths, logger: logger)
        let leftoverUplink = await takeOverLeftoverUplink(spec)
        tapCreations = TapMarkers(directory: spec.paths.creatingDir)
        await deleteMarkedTaps(
            tapCreations, keeping: Set(restoring.map(\.tapName)), what: "an endpoint whose creation did not finish")

        // Set first: a switch that dies right after it came up is restarted with this spec.
        self.spec = spec
        do {
            if let leftoverSwitch {
                adopt(leftoverSwitch)
            } else {
                try await bringUpSwitch(spec)
            }
        } catch {
            self.spec = nil
            throw error
        }
        // A plug in the host keeps running on a tap that dockerd moved back from a container
        // removed meanwhile: that endpoint is gone (with evidence, the restore reports it), and
        // its plug is not adopted.
        for (id, plug) in leftovers.adopted {
            guard let key = restoring.first(where: { $0.endpointID == id })?.sandboxKey else { continue }
            switch host.sandboxFile(key) {
            case .missing, .notANamespace:
                await plug.terminate()
                pidFiles.remove(endpointID: id)
                leftovers.adopted[id] = nil
                leftovers.stopped.append(plug.switchPID)
            case .namespace, .cannotCheck:
                continue
            }
        }
        if leftoverSwitch == nil, owned, !leftovers.adopted.isEmpty {
            // A new switch: whatever plug still ran was attached to no switch of this network.
            for (id, plug) in leftovers.adopted {
                await plug.terminate()
                pidFiles.remove(endpointID: id)
                leftovers.stopped.append(plug.switchPID)
            }
            leftovers.adopted = [:]
        }
        // An owned switch is `.running` since `adopt` (or `.restarting`, if it died meanwhile).
        if switchState == .notStarted { switchState = .running }
        let management = managementClient()
        // A switch started just now has the ports its command line gave it (set by
        // ``startOwnedSwitch(_:)``); an adopted or external one is asked.
        if usablePorts == nil, let management {
            do {
                usablePorts = try await management.usablePorts()
            } catch {
                logger.warning("\(error)")
            }
        }
        // An adopted plug must be of the kind the endpoint's link asks for now (the link may
        // have changed while no worker ran): a wirefilter gets its settings again, idempotently;
        // a plug of the wrong kind, or of a pulled cable, is stopped (and the endpoint plugged
        // again by the restore below, with the right kind, unless its cable is pulled).
        for spec in restoring {
            guard let plug = leftovers.adopted[spec.endpointID] else { continue }
            if let wanted = PlugKind.wanted(for: spec.link), wanted == plug.kind {
                guard wanted == .wirefilter, let impairment = spec.link?.impairment else { continue }
                do {
                    try await plug.apply(impairment)
                    continue
                } catch {
                    logger.warning(
                        "cannot give the adopted wirefilter its settings; replacing it: \(error)",
                        metadata: ["endpoint": "\(spec.endpointID)"])
                }
            } else {
                logger.info(
                    "replacing the adopted plug: the link asks for \(PlugKind.wanted(for: spec.link)?.program ?? "none")",
                    metadata: [
                        "endpoint": "\(spec.endpointID)", "pid": "\(plug.pid)", "program": "\(plug.kind.program)",
                    ])
            }
            await plug.terminate()
            pidFiles.remove(endpointID: spec.endpointID)
            leftovers.adopted[spec.endpointID] = nil
            leftovers.stopped.append(plug.switchPID)
        }
        for pid in leftovers.stopped { await releasePort(of: pid) }
        let ports = leftovers.adopted.isEmpty ? [] : ((try? await management?.ports()) ?? [])
        for spec in restoring {
            guard let plug = leftovers.adopted[spec.endpointID] else { continue }
            endpoints[spec.endpointID] = ManagedEndpoint(spec: spec, state: .plugged)
            install(plug, port: ports.first { $0.peerPID == plug.switchPID }?.port, endpointID: spec.endpointID)
        }

        await removeCaptureLeftovers(adoptedSwitch: leftoverSwitch != nil)
        await bringUpUplink(leftover: leftoverUplink, switchAdopted: leftoverSwitch != nil)

        // Reply now: the endpoints are restored concurrently after the reply, each reported by
        // an `endpointState` event, so that no number of endpoints can exceed start's timeout.
        // Endpoints whose plug was adopted are `plugged` at once and get no event.
        _ = beginRestore(restoring.filter { leftovers.adopted[$0.endpointID] == nil })
        return .started(switch: switchStatus(of: spec), endpoints: sortedStatuses())
    }

    /// Starts, or finds, the switch as `spec.mode` says.
    private func bringUpSwitch(_ spec: SwitchSpec) async throws {
        switch spec.mode {
        case .own:
            try await startOwnedSwitch(spec)
        case .useOrCreate:
            switch await host.switches.probe(ctlDir: spec.paths.ctlDir) {
            case .answers:
                logger.info("using the switch that answers at \(spec.paths.ctlDir)")
            case .noReply:
                throw SwitchError.noPort(ctlDir: spec.paths.ctlDir)
            case .absent:
                if spec.paths.managementSocket == nil {
                    logger.warning(
                        "starting a switch without a management socket: no counters, and full ports show only through a probe"
                    )
                }
                try await startOwnedSwitch(spec)
            }
        case .external:
            switch await host.switches.probe(ctlDir: spec.paths.ctlDir) {
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
        let probe = await host.switches.probe(ctlDir: spec.paths.ctlDir)
        switch probe {
        case .absent: break
        case .answers, .noReply: throw SwitchError.alreadyRunning(ctlDir: spec.paths.ctlDir)
        }
        let files = switchFiles ?? SwitchFiles(spec: spec, networkID: networkID)
        let prepared = try files.prepare(logger: logger)
        let process: any RunningSwitch
        do {
            process = try await host.switches.start(files: files, logger: logger)
        } catch {
            // What this attempt took goes back: no new marker, no new directory stays.
            prepared.undo()
            throw error
        }
        createdDirectories += prepared.created
        usablePorts = SwitchProcess.clientPorts(spec: spec)
        adopt(process)
    }

    /// Makes `process` (started or adopted) the network's switch and watches it. The one writer
    /// of `switch.pid` as pid + start time (the daemon writes its bare pid there; an adopted
    /// switch's file may still hold that).
    func adopt(_ process: any RunningSwitch) {
        switchProcess = process
        switchState = .running
        owned = true
        switchPIDFile?.write(pid: process.pid, logger: logger)
        switchBackoff.started()
        // A restart that finished after a detach: the file names the switch; nothing watches it.
        guard !detached else {
            process.stopWatching()
            return
        }
        process.onExit { [weak self] exit in
            Task { await self?.switchExited(process, exit: exit) }
        }
        watchExternalPorts()
    }

    // MARK: Status

    func managementClient(timeout: Duration = .seconds(1)) -> (any SwitchManagement)? {
        let connect = host.management
        return spec?.paths.managementSocket(switchStartedByPlugin: owned).map { connect($0, timeout) }
    }

    func switchStatus() -> SwitchStatus? {
        spec.map(switchStatus(of:))
    }

    func switchStatus(of spec: SwitchSpec) -> SwitchStatus {
        SwitchStatus(
            ctlDir: spec.paths.ctlDir, managementSocket: spec.paths.managementSocket(switchStartedByPlugin: owned),
            owned: owned,
            pid: owned ? switchProcess?.pid : nil, numPorts: portsForClients(spec))
    }

    /// Ports containers and VMs may take: what the switch says it has (else the spec's), less
    /// the one an uplink holds (``SwitchProcess/argv(spec:executables:)`` adds it to a switch
    /// the worker starts).
    func portsForClients(_ spec: SwitchSpec) -> Int {
        guard let usablePorts else { return spec.numPorts }
        return max(usablePorts - (spec.uplink == nil ? 0 : 1), 0)
    }

    func sortedStatuses() -> [EndpointStatus] {
        endpoints.keys.sorted().compactMap { endpoints[$0]?.status() }
    }

    /// The switch, every endpoint with its port counters, and the ports that are not ours.
    /// Answers within about a second even when the management socket hangs (counters are then absent).
    func status() async -> WorkerStatus {
        guard let status = switchStatus() else { return WorkerStatus() }
        var entries: [PortEntry]?
        var macs: [MACTableEntry]?
        if switchState == .running, let management = managementClient(timeout: .milliseconds(800)) {
            do {
                entries = try await management.portEntries()
                macs = try? await management.macTable()
            } catch {
                logger.debug("no counters: \(error)")
            }
        }
        let ports = entries.map { $0.filter(\.active).map(\.counters) }
        // Taken after the await: endpoints may have changed meanwhile.
        var ours = Set<Int>()
        let uplinkStatus = uplinkStatus(ports: ports)
        if let port = uplinkStatus?.counters?.port { ours.insert(port) }
        let statuses = endpoints.keys.sorted().compactMap { id -> EndpointStatus? in
            guard let endpoint = endpoints[id] else { return nil }
            let counters = endpoint.plug.flatMap { plug in ports?.first { $0.peerPID == plug.switchPID } }
            if let counters { ours.insert(counters.port) }
            return endpoint.status(counters: counters)
        }
        let captures = await captureStatuses()
        let own = processID
        return WorkerStatus(
            switch: status, endpoints: statuses,
            otherPorts: ports?.filter { !ours.contains($0.port) && $0.peerPID != own },
            externalPorts: externalPortsForStatus(entries: entries, macs: macs),
            lostExternalPorts: lostExternalPortsForStatus, captures: captures, uplink: uplinkStatus)
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
        tapPollTask?.cancel()
        for task in restartTasks { task.cancel() }
        await endAllCaptures(reason: "the network's worker is shutting down (\(reason))")
        await stopUplink()
        let plugs = endpoints.compactMap { id, endpoint in endpoint.plug.map { (id, $0) } }
        for id in endpoints.keys {
            endpoints[id]?.plug = nil
            endpoints[id]?.state = .unplugged
        }
        await withTaskGroup(of: Void.self) { group in
            for (_, plug) in plugs {
                group.addTask { await plug.terminate(grace: .milliseconds(500)) }
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
        removeLinkFiles()
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
