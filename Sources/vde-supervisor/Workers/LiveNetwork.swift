import Shared

/// What the supervisor knows of one network besides its record in the state: its worker, what
/// that worker last reported, and which calls for it are under way. Memory only: the plugin
/// keeps one per network (``VDEPlugin/live``), made by CreateNetwork or the restore and
/// dropped with the network; the record in ``SupervisorState`` is the persistent part.
struct LiveNetwork: Sendable {
    /// A call that changes the whole network; other calls for it fail or wait meanwhile.
    enum Change: Sendable, Equatable {
        /// CreateNetwork: the worker is not the network's yet. The spec reserves the switch's
        /// paths until the network is recorded (see ``VDEPlugin/checkNoConflict(_:of:)``).
        case creating(SwitchSpec)
        /// DeleteNetwork.
        case deleting
    }

    /// The network's worker; nil while it is being created and after the supervisor stopped them all.
    var worker: NetworkWorker?
    var change: Change?
    /// CreateEndpoint calls waiting for the worker; DeleteNetwork refuses meanwhile (the worker
    /// would make a tap that nobody records).
    var addsInFlight = 0
    /// What the worker last reported about the switch.
    var switchStatus: SwitchStatus?
    /// What the worker last reported about each endpoint (plug state and pid, port), by endpoint ID.
    var endpoints: [EndpointID: EndpointStatus] = [:]

    /// The switch paths a network being created holds.
    var reservedSpec: SwitchSpec? {
        if case .creating(let spec) = change { return spec }
        return nil
    }

    /// A (re)started worker's reply to `start`. Returns the endpoints it found gone (`tapGone`).
    ///
    /// The reply says `restarting` for every endpoint it restores; an `endpointState` event of
    /// the same worker may have been handled already (events and the reply race). `hello`, the
    /// worker's first line, cleared what an earlier worker reported, so a status present now is
    /// such an event's: it is kept.
    mutating func workerStarted(_ started: NetworkWorker.Started, recorded: Set<EndpointID>) -> [EndpointID] {
        switchStatus = started.switchStatus
        var gone: [EndpointID] = []
        for endpoint in started.endpoints where recorded.contains(endpoint.endpointID) {
            if endpoint.state == .restarting, endpoints[endpoint.endpointID] != nil { continue }
            endpoints[endpoint.endpointID] = endpoint
            if endpoint.state == .tapGone { gone.append(endpoint.endpointID) }
        }
        return gone
    }

    /// A new worker of this network said hello: what the earlier one reported is void.
    mutating func workerSaidHello() {
        endpoints.removeAll()
    }

    /// An `endpointState` event about a recorded endpoint.
    mutating func endpointStateChanged(_ endpoint: EndpointRecord, to state: PlugState, pid: Int32?, detail: String?) {
        var status =
            endpoints[endpoint.id]
            ?? EndpointStatus(
                endpointID: endpoint.id, tapName: endpoint.tapName, macAddress: endpoint.macAddress, state: state)
        status.state = state
        status.plugPID = state == .plugged ? pid : nil
        status.detail = detail
        endpoints[endpoint.id] = status
    }
}
