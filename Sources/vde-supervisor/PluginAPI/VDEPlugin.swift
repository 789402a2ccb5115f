import Glibc
import Logging
import Shared

/// The `vde` plugin's brain: the NetworkDriver and IpamDriver calls, the state they change,
/// and the workers that carry out the network work.
///
/// Every change follows one order (``perform(_:worker:)``): validate, apply to a copy of the
/// state, have the worker do its part, write the state file atomically, then swap the copy in
/// (and what memory holds of the network) and reply. A failed step changes nothing. Where a
/// call departs from that, its comment and docs/architecture.md say how and why.
actor VDEPlugin {
    /// The plugin's code runs on a queue of its own: `commit` writes and syncs the state file and
    /// `createNetwork` looks up `socket_group` (NSS, possibly over the network) inside the actor,
    /// and those blocking calls must not hold a cooperative thread (two on a two-core host).
    nonisolated let executor = SerialQueueExecutor(label: "vde-supervisor.plugin")
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    let configuration: SupervisorConfiguration
    let logger: Logger
    let startedAt = ContinuousClock.now
    /// `state.json` and its journal; used only from this actor (it is not `Sendable`).
    let store: JournaledStateStore
    private(set) var state: SupervisorState
    /// One per network in the state, and one per network being created: its worker, what the
    /// worker last reported, the calls under way (see ``LiveNetwork``).
    var live: [NetworkID: LiveNetwork] = [:]
    /// A `link` change is under way; the others wait here, in order (``link(_:)``).
    /// `link` changes, one at a time (``link(_:)``).
    var linkChanges = SerialGate()
    /// Forks the workers (``WorkerForkServer``), started with the first one.
    let forkServer: WorkerForkServer
    /// Pings one worker at a time (``HeartbeatSweep``); started with the workers.
    private var heartbeats: Task<Void, Never>?

    init(configuration: SupervisorConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        forkServer = WorkerForkServer(
            executable: configuration.networkerPath, runDir: configuration.runDir, logLevel: configuration.logLevel,
            logger: logger)
        let store = JournaledStateStore(directory: configuration.stateDir)
        self.store = store
        self.state = try store.open(userInfo: [NetworkRecord.runDirKey: configuration.runDir])
        guard state.version == SupervisorState.currentVersion else {
            throw VDEError.invalid(
                "state file \(configuration.stateDir)/state.json has version \(state.version); "
                    + "this vde-supervisor reads version \(SupervisorState.currentVersion)")
        }
    }

    /// Records `newState` durably (one journal record of the networks and pools that differ,
    /// synced, or with `.syncLater` written and synced by ``syncDeferredState()``), then makes it
    /// current. Throws (changing nothing) if the write fails.
    ///
    /// The store finds what changed by comparing unit by unit, not the callers by naming what
    /// they touched: one place decides what is written, and a caller cannot forget a unit.
    /// An unchanged network costs one lookup and one identity check (``NetworkRecord`` is boxed).
    func commit(_ newState: SupervisorState, durability: JournaledStateStore.Durability = .synced) throws {
        try store.commit(from: state, to: newState, durability: durability)
        state = newState
    }

    /// Records `newState` as ``commit(_:durability:)`` does but leaves the record's sync to a
    /// job queued behind this call on the plugin's queue (``syncDeferredState()``), which runs
    /// while the reply is on its way: for the IPAM calls (see ``changeIPAM(_:)`` for why that
    /// is safe). The sync of an idle disk here takes 0.35 ms, more than the rest of the call.
    func commitSyncingAfterReply(_ newState: SupervisorState) throws {
        try commit(newState, durability: .syncLater)
        // One job per call: a job that finds the record synced already (by a later commit or an
        // earlier job) does nothing.
        Task { self.syncDeferredState() }
    }

    /// Syncs what was committed with ``JournaledStateStore/Durability/syncLater`` (nothing when a
    /// later commit's sync covered it). A failure is logged: the replies are out, and the next
    /// commit writes the whole state as the snapshot first.
    func syncDeferredState() {
        do {
            try store.syncDeferred()
        } catch {
            logger.error("\(error.vdeError.message)")
        }
    }

    /// Writes the state as `state.json` alone (the journal compacted), for a clean stop: the
    /// release before the journal reads all of it. A failure is logged: the journal still holds it.
    func checkpoint() {
        syncDeferredState()
        do {
            try store.checkpoint(state)
        } catch {
            logger.warning(
                "could not compact the state journal at stop; it is replayed at the next start",
                metadata: ["error": "\(error.vdeError.message)"])
        }
    }

    /// The one order of a change: `change` is applied to a copy of the state first (validation:
    /// a change that cannot apply throws here, before the worker acts); then the worker does its
    /// part; then `change` is applied again, to the state as it is now (other calls may have
    /// committed while the worker worked, and their changes must not be lost), and the result
    /// is written atomically and swapped in. `change` must therefore give the same result when
    /// applied to a state that already has it. Returns what the worker's part returned; the
    /// caller swaps in what memory holds of the network and replies.
    func perform<T>(
        _ change: (inout SupervisorState) throws -> Void, durability: JournaledStateStore.Durability = .synced,
        worker part: () async throws -> T
    ) async throws -> T {
        var copy = state
        try change(&copy)
        let result = try await part()
        var next = state
        try change(&next)
        try commit(next, durability: durability)
        return result
    }

    // MARK: workers

    /// How many workers ``restoreNetworks()`` adopts or starts at once. Each launch takes a
    /// thread of its own while it connects (``Blocking``), and a cold start spawns a worker, a
    /// switch and plugs: unbounded, 1000 networks meant 1000 threads at once in the supervisor
    /// (against the unit's `TasksMax`) and 1000 workers starting together on two CPUs, each
    /// with 15 s to answer `start` (the load average reached 216 on two CPUs). 16 at once
    /// adopted 1000 running workers in 5.0 s after a kill -9 on a loaded machine, every one
    /// with its pid (bench/lib/scale.py, docs/benchmarks.md "Scale (issue 17)").
    static let restoreWidth = 16

    /// Starts a worker for every network in the state and waits until each has made its first
    /// attempt to restore its network (a failed one is logged and retried with backoff), at
    /// most ``restoreWidth`` at once. Every network gets its ``NetworkWorker`` (phase
    /// `starting`) before the first launch, so that `status`, served meanwhile, lists them all
    /// and names the ones not adopted yet. Then starts the heartbeat sweep, which checks one
    /// worker at a time.
    func restoreNetworks() async {
        startHeartbeats()
        let ids = state.networks.keys.sorted()
        guard !ids.isEmpty else { return }
        logger.info("restoring networks from state", metadata: ["networks": "\(ids.count)"])
        let started = ContinuousClock.now
        let workers = ids.map { id in
            let worker = makeWorker(networkID: id)
            live[id, default: LiveNetwork()].worker = worker
            return (id, worker)
        }
        await withTaskGroup(of: Void.self) { group in
            for (index, (id, worker)) in workers.enumerated() {
                if index >= Self.restoreWidth { await group.next() }
                // Read now, not when the workers were made: a `link` change may have been
                // recorded meanwhile (the control socket answers during the restore).
                guard let assignment = assignment(of: id) else { continue }
                group.addTask { await worker.restore(assignment) }
            }
        }
        logger.info(
            "networks restored",
            metadata: ["networks": "\(ids.count)", "seconds": "\(ContinuousClock.now - started)"])
    }

    /// Starts the heartbeat sweep (once).
    func startHeartbeats() {
        guard heartbeats == nil else { return }
        let sweep = HeartbeatSweep(workers: { [weak self] in await self?.runningWorkers() ?? [] })
        heartbeats = Task { await sweep.run() }
    }

    /// The workers of the networks, sorted by network ID (the sweep's order).
    func runningWorkers() -> [NetworkWorker] {
        live.keys.sorted().compactMap { live[$0]?.worker }
    }

    /// Ends the link to every worker and leaves them running with their switches and plugs (the
    /// data path outlives the supervisor): used on SIGTERM/SIGINT. The next supervisor adopts them.
    func detachAllWorkers() async {
        heartbeats?.cancel()
        checkpoint()
        let all = live.values.compactMap(\.worker)
        for id in live.keys { live[id]?.worker = nil }
        for worker in all { await worker.detach() }
        await forkServer.stop()
    }

    /// Stops every worker (each stops its switch and plugs).
    func stopAllWorkers() async {
        heartbeats?.cancel()
        let all = live.values.compactMap(\.worker)
        for id in live.keys { live[id]?.worker = nil }
        await withTaskGroup(of: Void.self) { group in
            for worker in all {
                group.addTask { await worker.stop() }
            }
        }
        await forkServer.stop()
    }

    func makeWorker(networkID: NetworkID) -> NetworkWorker {
        NetworkWorker(
            networkID: networkID,
            executable: configuration.networkerPath,
            runDir: configuration.runDir,
            logLevel: configuration.logLevel,
            forkServer: forkServer,
            logger: logger,
            assignment: { [weak self] in await self?.assignment(of: networkID) },
            onStarted: { [weak self] started in await self?.workerStarted(networkID: networkID, started) },
            onEvent: { [weak self] event in await self?.workerEvent(networkID: networkID, event) })
    }

    func worker(of networkID: NetworkID) throws -> NetworkWorker {
        guard let worker = live[networkID]?.worker else {
            throw VDEError.unavailable("network \(networkID.short) has no worker")
        }
        return worker
    }

    private func assignment(of networkID: NetworkID) -> NetworkWorker.Assignment? {
        guard let record = state.networks[networkID] else { return nil }
        return NetworkWorker.Assignment(switchSpec: record.switchSpec, endpoints: record.endpointSpecs)
    }

    /// The endpoints a worker was handed with another link than the one recorded now (and not gone).
    static func staleLinks(handed: [EndpointSpec], record: NetworkRecord, gone: [EndpointID]) -> [EndpointID] {
        handed.filter { spec in
            !gone.contains(spec.endpointID) && record.endpoints[spec.endpointID].map { $0.link != spec.link } == true
        }.map(\.endpointID)
    }

    private func workerStarted(networkID: NetworkID, _ started: NetworkWorker.Started) {
        guard let record = state.networks[networkID] else { return }
        let gone = live[networkID, default: LiveNetwork()].workerStarted(started, recorded: Set(record.endpoints.keys))
        recordSwitchStarted(networkID: networkID, started.switchStatus.owned)
        if !gone.isEmpty { sweepStaleEndpoints(gone, of: networkID) }
        // A `link` change recorded while the worker was being started, after its assignment was read.
        let stale = Self.staleLinks(handed: started.handed, record: record, gone: gone)
        if !stale.isEmpty { Task { await self.resendChangedLinks(stale, of: networkID) } }
    }

    /// Endpoints whose container is gone, on the worker's evidence (the container was removed
    /// while the supervisor or worker was down, so dockerd's Leave/DeleteEndpoint never reached
    /// us): they are forgotten and their addresses freed, in a task of its own (this is called
    /// while the worker's link delivers an event, and the worker's part needs that link).
    private func sweepStaleEndpoints(_ endpointIDs: [EndpointID], of networkID: NetworkID, evidence: String? = nil) {
        Task { await self.forgetStaleEndpoints(endpointIDs, of: networkID, evidence: evidence) }
    }

    /// The stale-endpoint sweep, in the order of every change (``perform(_:worker:)``): the
    /// endpoints still recorded are forgotten on a copy of the state (addresses freed); the
    /// worker's part is `removeEndpoint` for each (it stopped their plugs and deleted their taps
    /// before it reported them gone; this lets it drop its records, and is idempotent); its
    /// failure is logged, not fatal: the evidence stands, and a later worker is not given the
    /// endpoints again. Then the state is written and the statuses dropped.
    func forgetStaleEndpoints(_ endpointIDs: [EndpointID], of networkID: NetworkID, evidence: String? = nil) async {
        let stale = endpointIDs.filter { state.networks[networkID]?.endpoints[$0] != nil }
        guard !stale.isEmpty, let network = state.networks[networkID] else { return }
        let worker = live[networkID]?.worker
        do {
            try await perform(
                { Self.forget(stale, of: networkID, in: &$0) },
                worker: {
                    for endpointID in stale {
                        do {
                            try await worker?.removeEndpoint(endpointID)
                        } catch {
                            logger.info(
                                "the worker could not drop a stale endpoint; it is forgotten all the same",
                                metadata: [
                                    "endpoint": "\(endpointID.short)", "error": "\(VDEError(wrapping: error).message)",
                                ])
                        }
                    }
                })
        } catch {
            logger.error(
                "could not record the removal of stale endpoints",
                metadata: ["error": "\(VDEError(wrapping: error).message)"])
            return
        }
        for endpointID in stale {
            live[networkID]?.endpoints[endpointID] = nil
            logger.warning(
                "forgot a stale endpoint: its container is gone (removed while we were down)",
                metadata: [
                    "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
                    "tap": "\(network.endpoints[endpointID]?.tapName ?? "?")", "evidence": "\(evidence ?? "tap gone")",
                ])
        }
    }

    /// Forgets `endpointIDs` of a network and frees their addresses; endpoints already gone are skipped.
    private static func forget(_ endpointIDs: [EndpointID], of networkID: NetworkID, in state: inout SupervisorState) {
        guard var network = state.networks[networkID] else { return }
        for endpointID in endpointIDs {
            guard let endpoint = network.endpoints.removeValue(forKey: endpointID) else { continue }
            for address in [endpoint.address, endpoint.addressIPv6].compactMap({ $0 }).map(NetworkRecord.stripPrefix) {
                for poolID in network.poolIDs {
                    if (try? state.ipam.releaseAddress(
                        DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: address))) != nil
                    {
                        break
                    }
                }
            }
        }
        state.networks[networkID] = network
    }

    private func workerEvent(networkID: NetworkID, _ event: WorkerEvent) {
        var metadata: Logger.Metadata = ["network": "\(networkID.short)"]
        if let child = event.child { metadata["child"] = "\(child.rawValue)" }
        if let pid = event.pid { metadata["pid"] = "\(pid)" }
        if let endpoint = event.endpointID { metadata["endpoint"] = "\(endpoint.short)" }
        if let detail = event.detail { metadata["detail"] = "\(detail)" }
        guard let record = state.networks[networkID] else { return }
        switch event {
        case .hello:
            // A new worker of this network: what the earlier one reported about its endpoints is
            // void. `hello` is its first line, handled before its start reply and its events.
            logger.debug("worker said hello", metadata: metadata)
            live[networkID]?.workerSaidHello()
        case .childExited:
            logger.info("child exited", metadata: metadata)
        case .childRestarted:
            logger.info("child restarted", metadata: metadata)
        case .tapGone(let endpointID, _, _):
            logger.info("endpoint's tap vanished; its plug was stopped", metadata: metadata)
            live[networkID]?.endpoints[endpointID]?.state = .tapGone
        case .endpointState(let endpointID, let newState, let pid, let detail):
            // The outcome of restoring or re-plugging one endpoint. `tapGone` carries evidence
            // that the container is gone: the endpoint is forgotten. `unreachable` is no
            // evidence: the endpoint is kept, and the worker keeps looking.
            guard let endpoint = record.endpoints[endpointID] else { return }
            live[networkID]?.endpointStateChanged(endpoint, to: newState, pid: pid, detail: detail)
            switch newState {
            case .plugged: logger.debug("endpoint plugged", metadata: metadata)
            case .unreachable:
                logger.warning("cannot tell where the endpoint's tap is; the worker keeps looking", metadata: metadata)
            case .tapGone: sweepStaleEndpoints([endpointID], of: networkID, evidence: detail)
            case .unplugged, .restarting, .linkDown: break
            }
        }
    }
}

extension VDEPlugin {
    /// One line for systemd's STATUS= and logs: networks, endpoints, worker health.
    func statusLine() async -> String {
        var running = 0
        var starting = 0
        var restarting = 0
        var other = 0
        for worker in live.values.compactMap(\.worker) {
            switch await worker.phase {
            case .running: running += 1
            case .starting: starting += 1
            case .restarting: restarting += 1
            case .stopping, .stopped: other += 1
            }
        }
        let endpoints = state.networks.values.reduce(0) { $0 + $1.endpoints.count }
        var line = "\(state.networks.count) network(s), \(endpoints) endpoint(s); workers: \(running) healthy"
        if starting > 0 { line += ", \(starting) starting" }
        if restarting > 0 { line += ", \(restarting) restarting" }
        if other > 0 { line += ", \(other) stopped" }
        return line
    }
}
