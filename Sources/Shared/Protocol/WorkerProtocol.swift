/// The JSON-lines protocol between the supervisor and one `vde-networker`.
///
/// One JSON object per line, UTF-8, at most ``WorkerProtocol/maxLineBytes`` bytes.
/// The supervisor writes ``WorkerRequest``s to the worker's stdin; the worker writes
/// ``WorkerMessage``s (replies carrying the request's `id`, and unsolicited events) to
/// its stdout. Every line carries `v`, the protocol version. See docs/worker-protocol.md.
public enum WorkerProtocol {
    public static let version = 1
    /// Longest line either side accepts; a longer one is dropped and logged.
    public static let maxLineBytes = 1 << 20
}

/// How the user asked the worker to treat the switch of its network: the intent, kept as
/// given. Whether the plugin really started the switch is a separate fact
/// (``SwitchStatus/owned``, recorded by the supervisor).
public enum SwitchMode: String, Codable, Sendable, Equatable {
    /// The default: start a `vde_switch` at the ctl dir; fail if one already answers there.
    case own
    /// Use the switch answering at the ctl dir, or start one there if none answers
    /// (`socket_dir` with `create_sockets=true`).
    case useOrCreate
    /// Use the switch answering at the ctl dir (`socket_dir` alone); never start, stop or delete it.
    case external
}

/// What a worker needs to run the switch of one network. Decoding checks it whole (paths,
/// group, port count, a management socket for an `own` switch), so the worker trusts it.
public struct SwitchSpec: Codable, Sendable, Equatable {
    /// Every path of the network, computed once by the supervisor and recorded in its state;
    /// the worker derives none. On the wire its fields sit beside the others (`networkDir`,
    /// `ctlDir`, `managementSocket`).
    public var paths: NetworkPaths
    public var mode: SwitchMode
    /// Group that may use the switch's sockets (`vde_switch -g`).
    public var group: GroupName?
    /// How many containers and VMs may attach at once.
    public var numPorts: Int

    public init(paths: NetworkPaths, mode: SwitchMode, group: GroupName?, numPorts: Int) throws(VDEError) {
        guard (1...NetworkOptions.maxNumSwitchports).contains(numPorts) else {
            throw .invalid("numPorts \(numPorts) must be from 1 to \(NetworkOptions.maxNumSwitchports)")
        }
        if mode == .own && paths.managementSocket == nil {
            // The supervisor always sets it for its own switches: without it the worker could not
            // see ports and counters, and would see a full switch only through a probe.
            throw .invalid("a switch of mode own needs a management socket; the supervisor sent none")
        }
        self.paths = paths
        self.mode = mode
        self.group = group
        self.numPorts = numPorts
    }

    private enum CodingKeys: String, CodingKey { case mode, group, numPorts }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(paths: NetworkPaths(from: decoder), mode: container.decode(SwitchMode.self, forKey: .mode),
                          group: container.decodeIfPresent(GroupName.self, forKey: .group),
                          numPorts: container.decode(Int.self, forKey: .numPorts))
        } catch let error as VDEError {
            throw DecodingError.dataCorrupted(.init(codingPath: container.codingPath, debugDescription: error.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        try paths.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mode, forKey: .mode)
        try container.encodeIfPresent(group, forKey: .group)
        try container.encode(numPorts, forKey: .numPorts)
    }
}

/// One endpoint as the worker must provide it: a tap plugged into the switch.
public struct EndpointSpec: Codable, Sendable, Equatable {
    public var endpointID: EndpointID
    /// The tap's name in the host namespace (before dockerd moves it, and after Leave).
    public var tapName: TapName
    public var macAddress: MACAddress
    /// The container's network namespace once joined (`/var/run/docker/netns/...`).
    public var sandboxKey: SandboxKey?
    /// The endpoint's IPv4 address (no prefix), announced by unsolicited ARP after a re-plug.
    public var ipv4Address: IPv4Address?

    public init(endpointID: EndpointID, tapName: TapName, macAddress: MACAddress, sandboxKey: SandboxKey? = nil,
                ipv4Address: IPv4Address? = nil) {
        self.endpointID = endpointID
        self.tapName = tapName
        self.macAddress = macAddress
        self.sandboxKey = sandboxKey
        self.ipv4Address = ipv4Address
    }
}

/// The operations a supervisor asks of a worker.
public enum WorkerOperation: String, Codable, Sendable {
    /// Bring up the switch (per `switch`) and reply once it is ready, with every endpoint of
    /// `endpoints` `restarting`; they are restored afterwards, concurrently, each reported by an
    /// `endpointState` event.
    case start
    /// Make the tap of `endpoint` and plug it into the switch.
    case addEndpoint
    /// Record that `endpointID` now lives in the namespace `sandboxKey`; an endpoint that had
    /// left (a `docker restart`) is plugged again.
    case joinEndpoint
    /// Stop the plug of `endpointID` (the container leaves; dockerd moves the tap back).
    case leaveEndpoint
    /// Stop the plug of `endpointID` and delete its tap.
    case removeEndpoint
    /// Report the switch, the endpoints and their port counters.
    case status
    /// Liveness check; answered at once.
    case ping
    /// Stop every child, remove what the worker created, reply, and exit.
    case shutdown
}

/// A request line, supervisor to worker.
public struct WorkerRequest: Codable, Sendable, Equatable {
    public var v: Int
    public var id: UInt64
    public var op: WorkerOperation
    public var `switch`: SwitchSpec?
    public var endpoints: [EndpointSpec]?
    public var endpoint: EndpointSpec?
    public var endpointID: String?
    public var sandboxKey: String?

    public init(id: UInt64, op: WorkerOperation, switch spec: SwitchSpec? = nil, endpoints: [EndpointSpec]? = nil,
                endpoint: EndpointSpec? = nil, endpointID: String? = nil, sandboxKey: String? = nil) {
        self.v = WorkerProtocol.version
        self.id = id
        self.op = op
        self.switch = spec
        self.endpoints = endpoints
        self.endpoint = endpoint
        self.endpointID = endpointID
        self.sandboxKey = sandboxKey
    }
}

/// The switch as the worker runs it.
public struct SwitchStatus: Codable, Sendable, Equatable {
    public var ctlDir: String
    public var managementSocket: String?
    /// True when this worker started the switch (and will stop and remove it).
    public var owned: Bool
    public var pid: Int32?
    /// Ports the switch offers to containers and VMs.
    public var numPorts: Int

    public init(ctlDir: String, managementSocket: String?, owned: Bool, pid: Int32?, numPorts: Int) {
        self.ctlDir = ctlDir
        self.managementSocket = managementSocket
        self.owned = owned
        self.pid = pid
        self.numPorts = numPorts
    }
}

/// Packet and byte counters of one switch port, as `port/print` reports them.
public struct PortCounters: Codable, Sendable, Equatable {
    public var port: Int
    public var inPackets: UInt64
    public var inBytes: UInt64
    public var outPackets: UInt64
    public var outBytes: UInt64
    /// The endpoint line of the port: program and pid (`vde_plug2tap: user=root pid=42`, `QEMU`).
    public var peer: String?
    public var peerPID: Int32?

    public init(port: Int, inPackets: UInt64 = 0, inBytes: UInt64 = 0, outPackets: UInt64 = 0, outBytes: UInt64 = 0,
                peer: String? = nil, peerPID: Int32? = nil) {
        self.port = port
        self.inPackets = inPackets
        self.inBytes = inBytes
        self.outPackets = outPackets
        self.outBytes = outBytes
        self.peer = peer
        self.peerPID = peerPID
    }
}

/// The state of one endpoint's plug.
public enum PlugState: String, Codable, Sendable, Equatable {
    /// The plug runs and is attached to a switch port.
    case plugged
    /// Left: no plug runs (the container left, or has not joined back).
    case unplugged
    /// The plug exited and is being restarted.
    case restarting
    /// The tap is gone (its container was removed); nothing runs for it.
    case tapGone
    /// The worker could not look where the tap is (the container's namespace could not be
    /// entered or listed); nothing runs for it, and the worker looks again with backoff. Not
    /// evidence that the container is gone: the endpoint is kept. `detail` says why.
    case unreachable
}

/// One endpoint as the worker runs it.
public struct EndpointStatus: Codable, Sendable, Equatable {
    public var endpointID: EndpointID
    public var tapName: TapName
    public var macAddress: MACAddress
    public var state: PlugState
    public var plugPID: Int32?
    /// The switch port of the plug, when known from the management socket.
    public var port: Int?
    public var counters: PortCounters?
    /// Why the endpoint is in its state, when that needs saying (`unreachable`, `tapGone`).
    public var detail: String?

    public init(endpointID: EndpointID, tapName: TapName, macAddress: MACAddress, state: PlugState, plugPID: Int32? = nil,
                port: Int? = nil, counters: PortCounters? = nil, detail: String? = nil) {
        self.endpointID = endpointID
        self.tapName = tapName
        self.macAddress = macAddress
        self.state = state
        self.plugPID = plugPID
        self.port = port
        self.counters = counters
        self.detail = detail
    }
}

/// What a successful reply carries; which fields are set depends on the operation.
public struct WorkerResult: Codable, Sendable, Equatable {
    public var `switch`: SwitchStatus?
    public var endpoint: EndpointStatus?
    public var endpoints: [EndpointStatus]?
    /// Counters of ports that belong to no endpoint of ours (VMs, external plugs).
    public var otherPorts: [PortCounters]?

    public init(switch status: SwitchStatus? = nil, endpoint: EndpointStatus? = nil,
                endpoints: [EndpointStatus]? = nil, otherPorts: [PortCounters]? = nil) {
        self.switch = status
        self.endpoint = endpoint
        self.endpoints = endpoints
        self.otherPorts = otherPorts
    }
}

/// Unsolicited news from a worker.
public enum WorkerEventKind: String, Codable, Sendable {
    /// First line a worker writes: its pid and protocol version.
    case hello
    /// A child (`switch` or `plug`) exited; `endpointID` names the plug's endpoint.
    case childExited
    /// A child was started again after it exited.
    case childRestarted
    /// An endpoint's tap vanished; its plug was stopped.
    case tapGone
    /// The outcome of restoring (or re-plugging) one endpoint: `endpointID`, `state`
    /// (`plugged`, `unreachable` or `tapGone`), `pid` of the plug when plugged, `detail` the
    /// reason or evidence. `tapGone` here is positive evidence that the container is gone (its
    /// namespace file no longer exists or is no namespace; or the namespace holds no link with
    /// the endpoint's MAC and the tap is not in the host): the supervisor forgets the endpoint.
    case endpointState
}

/// A line from a worker: a reply (has `id`) or an event (has `event`).
public struct WorkerMessage: Codable, Sendable, Equatable {
    public var v: Int
    /// Set on replies: the id of the request answered.
    public var id: UInt64?
    public var ok: Bool?
    public var error: VDEError?
    public var result: WorkerResult?
    /// Set on events.
    public var event: WorkerEventKind?
    public var pid: Int32?
    public var child: String?
    public var endpointID: String?
    /// Set on `endpointState` events.
    public var state: PlugState?
    public var detail: String?

    public init(v: Int = WorkerProtocol.version, id: UInt64? = nil, ok: Bool? = nil, error: VDEError? = nil,
                result: WorkerResult? = nil, event: WorkerEventKind? = nil, pid: Int32? = nil, child: String? = nil,
                endpointID: String? = nil, state: PlugState? = nil, detail: String? = nil) {
        self.v = v
        self.id = id
        self.ok = ok
        self.error = error
        self.result = result
        self.event = event
        self.pid = pid
        self.child = child
        self.endpointID = endpointID
        self.state = state
        self.detail = detail
    }

    public static func reply(to id: UInt64, result: WorkerResult = WorkerResult()) -> WorkerMessage {
        WorkerMessage(id: id, ok: true, result: result)
    }

    public static func failure(of id: UInt64, _ error: VDEError) -> WorkerMessage {
        WorkerMessage(id: id, ok: false, error: error)
    }
}
