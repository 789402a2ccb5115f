import Glibc
import Logging
import Shared

/// The `vde` plugin's brain: the NetworkDriver and IpamDriver calls, the state they change,
/// and the workers that carry out the network work.
///
/// Every change follows the same order: validate, apply to a copy of the state, have the
/// worker do its part, write the state file atomically, then swap the copy in and reply.
/// A failed step changes nothing.
actor VDEPlugin {
    /// The plugin's code runs on a queue of its own: `commit` writes and syncs the state file and
    /// `createNetwork` looks up `socket_group` (NSS, possibly over the network) inside the actor,
    /// and those blocking calls must not hold a cooperative thread (two on a two-core host).
    nonisolated let executor = SerialQueueExecutor(label: "vde-supervisor.plugin")
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    let configuration: SupervisorConfiguration
    let logger: Logger
    let startedAt = ContinuousClock.now
    private let store: StateStore<SupervisorState>
    private(set) var state: SupervisorState
    /// One per network in the state (set by CreateNetwork and restore, removed by DeleteNetwork).
    var workers: [NetworkID: NetworkWorker] = [:]
    /// Networks being created or deleted right now; other calls for them wait or fail.
    var networksInFlight: Set<NetworkID> = []
    /// The switches of networks being created, by network ID: reservations of their paths, so
    /// that a concurrent create sees them before they are committed (see `switchConflict`).
    var switchesInFlight: [NetworkID: SwitchSpec] = [:]
    /// CreateEndpoint calls waiting for their worker, by network; DeleteNetwork refuses meanwhile.
    var endpointsInFlight: [NetworkID: Int] = [:]
    /// What the workers last reported about each endpoint (plug pid, port); not persisted.
    var endpointStatus: [EndpointID: EndpointStatus] = [:]
    /// What the workers last reported about each network's switch.
    var switchStatus: [NetworkID: SwitchStatus] = [:]

    init(configuration: SupervisorConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.store = StateStore(directory: configuration.stateDir)
        self.state = try store.load(userInfo: [NetworkRecord.runDirKey: configuration.runDir]) ?? SupervisorState()
        guard state.version == SupervisorState.currentVersion else {
            throw VDEError.invalid("state file \(configuration.stateDir)/state.json has version \(state.version); "
                + "this vde-supervisor reads version \(SupervisorState.currentVersion)")
        }
    }

    /// Writes `newState` atomically, then makes it current. Throws (changing nothing) if the write fails.
    func commit(_ newState: SupervisorState) throws {
        guard newState != state else { return }
        try store.save(newState)
        state = newState
    }

    // MARK: workers

    /// Starts a worker for every network in the state and waits until each has made its first
    /// attempt to restore its network (a failed one is logged and retried with backoff).
    func restoreNetworks() async {
        let ids = state.networks.keys.sorted()
        guard !ids.isEmpty else { return }
        logger.info("restoring networks from state", metadata: ["networks": "\(ids.count)"])
        await withTaskGroup(of: Void.self) { group in
            for id in ids {
                guard let assignment = assignment(of: id) else { continue }
                let worker = makeWorker(networkID: id)
                workers[id] = worker
                group.addTask { await worker.restore(assignment) }
            }
        }
    }

    /// Stops every worker (each stops its switch and plugs). Used on supervisor shutdown.
    func stopAllWorkers() async {
        let all = workers
        workers.removeAll()
        await withTaskGroup(of: Void.self) { group in
            for worker in all.values {
                group.addTask { await worker.stop() }
            }
        }
    }

    func makeWorker(networkID: NetworkID) -> NetworkWorker {
        NetworkWorker(
            networkID: networkID,
            executable: configuration.networkerPath,
            runDir: configuration.runDir,
            logLevel: configuration.logLevel,
            logger: logger,
            assignment: { [weak self] in await self?.assignment(of: networkID) },
            onStarted: { [weak self] result in await self?.workerStarted(networkID: networkID, result: result) },
            onEvent: { [weak self] event in await self?.workerEvent(networkID: networkID, event: event) })
    }

    func worker(of networkID: NetworkID) throws -> NetworkWorker {
        guard let worker = workers[networkID] else {
            throw VDEError.unavailable("network \(networkID.short) has no worker")
        }
        return worker
    }

    private func assignment(of networkID: NetworkID) -> NetworkWorker.Assignment? {
        guard let record = state.networks[networkID] else { return nil }
        return NetworkWorker.Assignment(switchSpec: record.switchSpec, endpoints: record.endpointSpecs)
    }

    private func workerStarted(networkID: NetworkID, result: WorkerResult) {
        if let status = result.switch { switchStatus[networkID] = status }
        recordSwitchStarted(networkID: networkID, result.switch?.owned)
        var stale: [EndpointID] = []
        for endpoint in result.endpoints ?? [] {
            guard state.networks[networkID]?.endpoints[endpoint.endpointID] != nil else { continue }
            // The reply says `restarting`; an `endpointState` event of this worker may have been
            // handled already (events and this call race). The worker's `hello` cleared what the
            // earlier worker reported, so a status present now is such an event's: keep it.
            if endpoint.state == .restarting, endpointStatus[endpoint.endpointID] != nil { continue }
            endpointStatus[endpoint.endpointID] = endpoint
            if endpoint.state == .tapGone { stale.append(endpoint.endpointID) }
        }
        if !stale.isEmpty { forgetStaleEndpoints(stale, of: networkID) }
    }

    /// Endpoints whose container is gone, on the worker's evidence (the container was removed
    /// while the supervisor or worker was down, so dockerd's Leave/DeleteEndpoint never reached
    /// us): forget them and free their addresses, then have the worker remove what is left
    /// (idempotent: it already stopped their plugs and deleted their taps).
    ///
    /// The order is the usual one: the worker has done its part before it reports `tapGone`
    /// (plug stopped, tap deleted in the background under a deletion marker), the state file is
    /// written, then memory. The `removeEndpoint` sent afterwards only lets the worker drop its
    /// record; it is idempotent, and a worker that missed it is not given the endpoint again.
    func forgetStaleEndpoints(_ endpointIDs: [EndpointID], of networkID: NetworkID, evidence: String? = nil) {
        var newState = state
        guard var network = newState.networks[networkID] else { return }
        for endpointID in endpointIDs {
            guard let endpoint = network.endpoints.removeValue(forKey: endpointID) else { continue }
            for address in [endpoint.address, endpoint.addressIPv6].compactMap({ $0 }).map(NetworkRecord.stripPrefix) {
                for poolID in network.poolIDs {
                    if (try? newState.ipam.releaseAddress(DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: address))) != nil {
                        break
                    }
                }
            }
            endpointStatus[endpointID] = nil
            logger.warning("forgot a stale endpoint: its container is gone (removed while we were down)", metadata: [
                "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
                "tap": "\(endpoint.tapName)", "evidence": "\(evidence ?? "tap gone")",
            ])
        }
        newState.networks[networkID] = network
        if let worker = workers[networkID] {
            Task {
                for endpointID in endpointIDs {
                    _ = try? await worker.request(WorkerRequest(id: 0, op: .removeEndpoint, endpointID: endpointID.rawValue))
                }
            }
        }
        do {
            try commit(newState)
        } catch {
            logger.error("could not record the removal of stale endpoints", metadata: ["error": "\(VDEError(wrapping: error).message)"])
        }
    }

    /// The outcome of restoring or re-plugging one endpoint. `tapGone` carries evidence that the
    /// container is gone: the endpoint is forgotten at once. `unreachable` is no evidence: the
    /// endpoint is kept, and the worker keeps looking.
    private func endpointStateChanged(networkID: NetworkID, endpointID: EndpointID, state newState: PlugState, pid: Int32?,
                                      detail: String?, metadata: Logger.Metadata) {
        guard let endpoint = state.networks[networkID]?.endpoints[endpointID] else { return }
        var status = endpointStatus[endpointID]
            ?? EndpointStatus(endpointID: endpointID, tapName: endpoint.tapName, macAddress: endpoint.macAddress, state: newState)
        status.state = newState
        status.plugPID = newState == .plugged ? pid : nil
        status.detail = detail
        endpointStatus[endpointID] = status
        switch newState {
        case .plugged: logger.debug("endpoint plugged", metadata: metadata)
        case .unreachable: logger.warning("cannot tell where the endpoint's tap is; the worker keeps looking", metadata: metadata)
        case .tapGone: forgetStaleEndpoints([endpointID], of: networkID, evidence: detail)
        case .unplugged, .restarting: break
        }
    }

    private func workerEvent(networkID: NetworkID, event: WorkerMessage) {
        var metadata: Logger.Metadata = ["network": "\(networkID.short)"]
        if let child = event.child { metadata["child"] = "\(child)" }
        if let pid = event.pid { metadata["pid"] = "\(pid)" }
        // The endpoint ID of an event is read once, here; an ID that breaks the rule names no endpoint of ours.
        let endpointID = event.endpointID.flatMap { try? EndpointID($0) }
        if let endpoint = endpointID { metadata["endpoint"] = "\(endpoint.short)" }
        if let detail = event.detail { metadata["detail"] = "\(detail)" }
        switch event.event {
        case .hello:
            // A new worker of this network: what the earlier one reported about its endpoints is
            // void. `hello` is its first line, handled before its start reply and its events.
            logger.debug("worker said hello", metadata: metadata)
            for id in state.networks[networkID].map({ Array($0.endpoints.keys) }) ?? [] { endpointStatus[id] = nil }
        case .childExited: logger.info("child exited", metadata: metadata)
        case .childRestarted: logger.info("child restarted", metadata: metadata)
        case .tapGone:
            logger.info("endpoint's tap vanished; its plug was stopped", metadata: metadata)
            if let id = endpointID { endpointStatus[id]?.state = .tapGone }
        case .endpointState:
            guard let id = endpointID, let newState = event.state else { return }
            endpointStateChanged(networkID: networkID, endpointID: id, state: newState, pid: event.pid, detail: event.detail,
                                 metadata: metadata)
        case nil: break
        }
    }
}

extension VDEPlugin {
    /// One line for systemd's STATUS= and logs: networks, endpoints, worker health.
    func statusLine() async -> String {
        var running = 0, restarting = 0, other = 0
        for worker in workers.values {
            switch await worker.phase {
            case .running: running += 1
            case .restarting, .starting: restarting += 1
            case .stopping, .stopped: other += 1
            }
        }
        let endpoints = state.networks.values.reduce(0) { $0 + $1.endpoints.count }
        var line = "\(state.networks.count) network(s), \(endpoints) endpoint(s); workers: \(running) healthy"
        if restarting > 0 { line += ", \(restarting) restarting" }
        if other > 0 { line += ", \(other) stopped" }
        return line
    }
}
