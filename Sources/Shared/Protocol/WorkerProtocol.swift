/// The JSON-lines protocol between the supervisor and one `vde-networker`.
///
/// One JSON object per line, UTF-8, at most ``WorkerProtocol/maxLineBytes`` bytes.
/// The supervisor writes ``WorkerRequest``s (a ``WorkerCommand`` in an envelope with the
/// protocol version and a request id) to the worker's stdin; the worker writes
/// ``WorkerMessage``s (a ``WorkerReply`` or a failure for that id, or an unsolicited
/// ``WorkerEvent``) to its stdout. Every line carries `v`, the protocol version, and a line of
/// another version is refused before anything else of it is read. See docs/worker-protocol.md.
public enum WorkerProtocol {
    /// 4 (0.16.0) added, without a bump, optional fields an older peer ignores: the switch spec's
    /// and the status's `uplink`, and the `uplink` child of events (sent only by a worker whose
    /// spec has an uplink, which an older supervisor never sends), so that an upgraded
    /// supervisor adopts the workers of the version before it (docs/recovery.md).
    /// 4: captures. 3: endpoints carry their link (`link`), `setLink`, the `linkDown` plug state.
    /// 2: commands, replies and events as tagged objects (`{"addEndpoint":{"endpoint":{...}}}`);
    /// 1 had a flat `op` with optional fields. Bump it on any change to a case or a label.
    public static let version = 4
    /// Longest line either side accepts; a longer one is dropped and logged.
    public static let maxLineBytes = 1 << 20
    /// How long a capture's socket waits for its command to connect before the capture is dropped.
    public static let captureConnectTimeoutSeconds = 10

    /// Reads `v` and refuses any other version, naming both (the two binaries come from one build).
    static func checkVersion<Key: CodingKey>(_ container: KeyedDecodingContainer<Key>, key: Key) throws {
        let v = try container.decode(Int.self, forKey: key)
        guard v == version else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: container,
                debugDescription: "protocol version \(v) is not supported; this side speaks version \(version): "
                    + "install vde-supervisor and vde-networker from one build")
        }
    }
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
    /// The MTU of the network's taps (`com.docker.network.driver.mtu`); nil: the kernel's 1500.
    public var mtu: Int?
    /// Run the switch as a hub (`vde_switch -x`, `-o hub=true`); only for a switch the worker starts.
    public var hub: Bool
    /// The network's uplink to other hosts (`-o uplink=URL`): the worker keeps
    /// `vde_plug vde://CTLDIR URL` running on the switch while it runs; nil: none.
    public var uplink: UplinkURL?

    public init(
        paths: NetworkPaths, mode: SwitchMode, group: GroupName?, numPorts: Int, mtu: Int? = nil, hub: Bool = false,
        uplink: UplinkURL? = nil
    ) throws(VDEError) {
        self.uplink = uplink
        guard !(hub && mode == .external) else {
            throw .invalid("a hub needs a switch the worker may start; mode external never starts one")
        }
        self.hub = hub
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
        if let mtu {
            guard NetworkOptions.mtuRange.contains(mtu) else {
                throw .invalid(
                    "mtu \(mtu) must be from \(NetworkOptions.mtuRange.lowerBound) to \(NetworkOptions.mtuRange.upperBound)"
                )
            }
        }
        self.mtu = mtu
    }

    private enum CodingKeys: String, CodingKey { case mode, group, numPorts, mtu, hub, uplink }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(
                paths: NetworkPaths(from: decoder), mode: container.decode(SwitchMode.self, forKey: .mode),
                group: container.decodeIfPresent(GroupName.self, forKey: .group),
                numPorts: container.decode(Int.self, forKey: .numPorts),
                mtu: container.decodeIfPresent(Int.self, forKey: .mtu),
                hub: container.decodeIfPresent(Bool.self, forKey: .hub) ?? false,
                uplink: container.decodeIfPresent(UplinkURL.self, forKey: .uplink))
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
        try container.encodeIfPresent(mtu, forKey: .mtu)
        // Absent when false: records and lines from before `hub` stay byte-identical.
        if hub { try container.encode(hub, forKey: .hub) }
        try container.encodeIfPresent(uplink, forKey: .uplink)
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
    /// The endpoint's link as the supervisor recorded it (network default overlaid with the
    /// endpoint's options and live changes); nil: unimpaired and up.
    public var link: LinkSettings?

    public init(
        endpointID: EndpointID, tapName: TapName, macAddress: MACAddress, sandboxKey: SandboxKey? = nil,
        ipv4Address: IPv4Address? = nil, link: LinkSettings? = nil
    ) {
        self.endpointID = endpointID
        self.tapName = tapName
        self.macAddress = macAddress
        self.sandboxKey = sandboxKey
        self.ipv4Address = ipv4Address
        self.link = link
    }
}

/// What the supervisor asks of a worker: one case per operation, each with exactly the fields
/// it needs (a missing or mistyped field fails the decoding of the line, naming the field).
/// On the wire: `{"addEndpoint":{"endpoint":{...}}}`, `{"ping":{}}`.
public enum WorkerCommand: Codable, Sendable, Equatable {
    /// Bring up the switch (per `switch`) and reply once it is ready, with every endpoint of
    /// `restore` `restarting`; they are restored afterwards, concurrently, each reported by an
    /// `endpointState` event. Replied with ``WorkerReply/started(switch:endpoints:)``.
    case start(switch: SwitchSpec, restore: [EndpointSpec] = [])
    /// Make the tap of `endpoint` and plug it into the switch. Replied with ``WorkerReply/endpoint(status:)``.
    case addEndpoint(endpoint: EndpointSpec)
    /// Record that `endpointID` now lives in the namespace `sandboxKey`; an endpoint that had
    /// left (a `docker restart`) is plugged again. Replied with ``WorkerReply/endpoint(status:)``.
    case joinEndpoint(endpointID: EndpointID, sandboxKey: SandboxKey)
    /// Stop the plug of `endpointID` (the container leaves; dockerd moves the tap back).
    /// Replied with ``WorkerReply/endpoint(status:)``.
    case leaveEndpoint(endpointID: EndpointID)
    /// Stop the plug of `endpointID` and delete its tap. Replied with ``WorkerReply/removed``.
    case removeEndpoint(endpointID: EndpointID)
    /// Give `endpointID` this link: impair it (a wirefilter plugs the tap instead of
    /// vde_plug2tap; an impaired endpoint's changes go to its wirefilter live), clear it, pull
    /// the cable (`down`: no plug runs) or plug it back. Replied with ``WorkerReply/endpoint(status:)``.
    case setLink(endpointID: EndpointID, link: LinkSettings)
    /// Set up a capture (`vde-supervisor capture`): reply `captureStarted` with the socket the
    /// capture command connects to within ``WorkerProtocol/captureConnectTimeoutSeconds``; the
    /// capture ends when that connection closes (docs/worker-protocol.md).
    case startCapture(capture: CaptureSpec)
    /// Report the switch, the endpoints and their port counters. Replied with ``WorkerReply/status(report:)``.
    case status
    /// Liveness check; answered at once with ``WorkerReply/pong``.
    case ping
    /// Stop every child, remove what the worker created, reply ``WorkerReply/stopped(switch:)``, and exit.
    case shutdown

    /// The commands by name, as the JSON key of each case.
    public enum Kind: String, CaseIterable, Sendable {
        case start, addEndpoint, joinEndpoint, leaveEndpoint, removeEndpoint, setLink, startCapture, status, ping,
            shutdown
    }

    public var kind: Kind {
        switch self {
        case .start: .start
        case .addEndpoint: .addEndpoint
        case .joinEndpoint: .joinEndpoint
        case .leaveEndpoint: .leaveEndpoint
        case .removeEndpoint: .removeEndpoint
        case .setLink: .setLink
        case .startCapture: .startCapture
        case .status: .status
        case .ping: .ping
        case .shutdown: .shutdown
        }
    }

    /// Answered at once, beside the state-changing commands (which run one at a time, in order).
    public var isQuery: Bool { self == .ping || self == .status }
}

/// A request line, supervisor to worker: `{"v":2,"id":7,"command":{...}}`.
public struct WorkerRequest: Codable, Sendable, Equatable {
    /// Chosen by the sender (the supervisor's link numbers its requests); the reply carries it back.
    public var id: UInt64
    public var command: WorkerCommand

    public init(id: UInt64, _ command: WorkerCommand) {
        self.id = id
        self.command = command
    }

    private enum CodingKeys: String, CodingKey { case v, id, command }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try WorkerProtocol.checkVersion(container, key: .v)
        id = try container.decode(UInt64.self, forKey: .id)
        command = try container.decode(WorkerCommand.self, forKey: .command)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(WorkerProtocol.version, forKey: .v)
        try container.encode(id, forKey: .id)
        try container.encode(command, forKey: .command)
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

    public init(
        port: Int, inPackets: UInt64 = 0, inBytes: UInt64 = 0, outPackets: UInt64 = 0, outBytes: UInt64 = 0,
        peer: String? = nil, peerPID: Int32? = nil
    ) {
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
    /// The user pulled the cable (`vde-supervisor link ... down`): no plug runs, the tap stays
    /// where it is and the container sees NO-CARRIER, until `up`.
    case linkDown
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
    /// The link the worker applies; nil: unimpaired and up.
    public var link: LinkSettings?
    /// The management socket of the endpoint's wirefilter while it is impaired and plugged.
    /// The wirefilter is then the plug itself (`plugPID`): it holds the tap and a switch port,
    /// and no vde_plug2tap runs; an unimpaired endpoint has no wirefilter at all.
    public var linkManagementSocket: String?

    public init(
        endpointID: EndpointID, tapName: TapName, macAddress: MACAddress, state: PlugState, plugPID: Int32? = nil,
        port: Int? = nil, counters: PortCounters? = nil, detail: String? = nil, link: LinkSettings? = nil,
        linkManagementSocket: String? = nil
    ) {
        self.link = link
        self.linkManagementSocket = linkManagementSocket
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

/// A switch port in use by something other than this worker's plugs: a VM (`QEMU`), a plug
/// started by hand on the network's ctl dir.
public struct ExternalPort: Codable, Sendable, Equatable {
    public var port: Int
    /// The client's description as the switch holds it: `vde_plug2tap: user=root pid=42`, `QEMU user=root pid=77`.
    public var peer: String?
    /// The description's first word without its colon: `vde_plug2tap`, `QEMU`.
    public var program: String?
    /// The description's `pid=N`: the client's pid in the namespace it was started in.
    public var pid: Int32?
    /// Source MACs the switch learnt on this port (`hash/print`, `hash/+`), sorted; kept while
    /// the port is in use, even after the switch's table let them expire.
    public var macAddresses: [String]
    /// Absent when the switch could not be asked (a port remembered after its switch died).
    public var counters: PortCounters?

    public init(
        port: Int, peer: String? = nil, program: String? = nil, pid: Int32? = nil, macAddresses: [String] = [],
        counters: PortCounters? = nil
    ) {
        self.port = port
        self.peer = peer
        self.program = program
        self.pid = pid
        self.macAddresses = macAddresses
        self.counters = counters
    }
}

/// External ports that were on a switch when it died: their clients (VMs) do not reconnect to
/// the restarted switch, so someone has to restart them.
public struct LostExternalPorts: Codable, Sendable, Equatable {
    /// The pid of the switch that died.
    public var switchPID: Int32
    /// How it ended (`killed by signal 9`).
    public var detail: String
    /// When the worker learnt of it, seconds since the epoch.
    public var at: Int64
    public var ports: [ExternalPort]

    public init(switchPID: Int32, detail: String, at: Int64, ports: [ExternalPort]) {
        self.switchPID = switchPID
        self.detail = detail
        self.at = at
        self.ports = ports
    }
}

/// The state of a network's uplink process.
public enum UplinkState: String, Codable, Sendable, Equatable {
    /// `vde_plug` runs and holds a switch port.
    case running
    /// It exited (or could not start) and is started again after a backoff delay.
    case restarting
    /// Not running: the switch is restarting, or the worker stopped it.
    case stopped
}

/// A network's uplink as the worker runs it: a line of `vde-supervisor status`.
public struct UplinkStatus: Codable, Sendable, Equatable {
    public var url: UplinkURL
    public var state: UplinkState
    public var pid: Int32?
    /// Its switch port and counters (frames in: from other hosts into the switch), when the
    /// management socket told them.
    public var counters: PortCounters?
    /// How often it was started again after it exited, since the worker started.
    public var restarts: Int
    /// How it last ended, or why it cannot start (`killed by signal 9`).
    public var detail: String?

    public init(
        url: UplinkURL, state: UplinkState, pid: Int32? = nil, counters: PortCounters? = nil, restarts: Int = 0,
        detail: String? = nil
    ) {
        self.url = url
        self.state = state
        self.pid = pid
        self.counters = counters
        self.restarts = restarts
        self.detail = detail
    }
}

/// What a worker reports in answer to `status`.
public struct WorkerStatus: Codable, Sendable, Equatable {
    /// Absent before `start`.
    public var `switch`: SwitchStatus?
    /// Sorted by endpoint ID, each with its port's counters when the management socket told them.
    public var endpoints: [EndpointStatus]
    /// Ports in use that belong to no endpoint of this worker (VMs, external plugs); absent when
    /// the management socket is unknown or did not answer in time.
    public var otherPorts: [PortCounters]?
    /// The same ports with their program, pid and MACs; absent as `otherPorts` is.
    public var externalPorts: [ExternalPort]?
    /// The external ports each switch death cut off (most recent last, a few kept); absent when none.
    public var lostExternalPorts: [LostExternalPorts]?
    /// Running captures, oldest first; absent when none.
    public var captures: [CaptureStatus]?
    /// The network's uplink; absent when it has none. Its port is not among `otherPorts`.
    public var uplink: UplinkStatus?

    public init(
        switch status: SwitchStatus? = nil, endpoints: [EndpointStatus] = [], otherPorts: [PortCounters]? = nil,
        externalPorts: [ExternalPort]? = nil, lostExternalPorts: [LostExternalPorts]? = nil,
        captures: [CaptureStatus]? = nil, uplink: UplinkStatus? = nil
    ) {
        self.uplink = uplink
        self.captures = captures
        self.switch = status
        self.endpoints = endpoints
        self.otherPorts = otherPorts
        self.externalPorts = externalPorts
        self.lostExternalPorts = lostExternalPorts
    }
}

/// What a worker answers to a command that succeeded: one case per kind of answer (which
/// command gets which is said at each ``WorkerCommand`` case).
public enum WorkerReply: Codable, Sendable, Equatable {
    /// To `start`: the switch, and every endpoint given to restore (`restarting`; each outcome
    /// follows as an `endpointState` event).
    case started(switch: SwitchStatus, endpoints: [EndpointStatus])
    /// To `addEndpoint`, `joinEndpoint` and `leaveEndpoint`: the endpoint as it is now.
    case endpoint(status: EndpointStatus)
    /// To `removeEndpoint`.
    case removed
    /// To `status`.
    case status(report: WorkerStatus)
    /// To `ping`.
    case pong
    /// To `shutdown`: the switch as it was when the worker stopped it (absent before `start`).
    case stopped(switch: SwitchStatus?)
    /// To `startCapture`: the unix stream socket (``NetworkPaths/captureSocket(_:)``) where the
    /// capture command connects to receive ``CaptureRecord``s.
    case captureStarted(socket: String)
}

/// Which child of a worker an event is about.
public enum WorkerChild: String, Codable, Sendable, Equatable {
    case `switch`
    case plug
    /// The network's uplink (`vde_plug vde://CTLDIR URL`).
    case uplink
}

/// Unsolicited news from a worker. On the wire: `{"childExited":{"child":"plug",...}}`.
public enum WorkerEvent: Codable, Sendable, Equatable {
    /// First line a worker writes: its pid.
    case hello(pid: Int32, detail: String)
    /// A child exited that was not being stopped; `endpointID` names a plug's endpoint, `detail`
    /// how it ended (`killed by signal 9`, `exited with status 1: <last stderr line>`).
    case childExited(child: WorkerChild, pid: Int32, endpointID: EndpointID? = nil, detail: String)
    /// A child was started again after it exited; `pid` is the new one.
    case childRestarted(child: WorkerChild, pid: Int32, endpointID: EndpointID? = nil, detail: String? = nil)
    /// An endpoint's tap vanished under a running plug; the plug (`pid`) was stopped.
    case tapGone(endpointID: EndpointID, pid: Int32? = nil, detail: String)
    /// The outcome of restoring (or re-plugging) one endpoint: `plugged` (with the plug's `pid`),
    /// `unreachable` or `tapGone`, `detail` the reason or evidence. `tapGone` here is positive
    /// evidence that the container is gone (its namespace file no longer exists or is no
    /// namespace; or the namespace holds no link with the endpoint's MAC and the tap is not in
    /// the host): the supervisor forgets the endpoint.
    case endpointState(endpointID: EndpointID, state: PlugState, pid: Int32? = nil, detail: String? = nil)

    public enum Kind: String, Sendable {
        case hello, childExited, childRestarted, tapGone, endpointState
    }

    public var kind: Kind {
        switch self {
        case .hello: .hello
        case .childExited: .childExited
        case .childRestarted: .childRestarted
        case .tapGone: .tapGone
        case .endpointState: .endpointState
        }
    }

    /// The fields events share, for logs and tests.
    public var pid: Int32? {
        switch self {
        case .hello(let pid, _), .childExited(_, let pid, _, _), .childRestarted(_, let pid, _, _): pid
        case .tapGone(_, let pid, _), .endpointState(_, _, let pid, _): pid
        }
    }

    public var child: WorkerChild? {
        switch self {
        case .childExited(let child, _, _, _), .childRestarted(let child, _, _, _): child
        case .hello, .tapGone, .endpointState: nil
        }
    }

    public var endpointID: EndpointID? {
        switch self {
        case .hello: nil
        case .childExited(_, _, let id, _), .childRestarted(_, _, let id, _): id
        case .tapGone(let id, _, _), .endpointState(let id, _, _, _): id
        }
    }

    public var detail: String? {
        switch self {
        case .hello(_, let detail), .childExited(_, _, _, let detail), .tapGone(_, _, let detail): detail
        case .childRestarted(_, _, _, let detail), .endpointState(_, _, _, let detail): detail
        }
    }

    /// The plug state an `endpointState` event reports.
    public var state: PlugState? {
        if case .endpointState(_, let state, _, _) = self { return state }
        return nil
    }
}

/// A line from a worker: the reply to a request, or an event.
///
/// On the wire: `{"v":2,"id":7,"reply":{...}}`, `{"v":2,"id":8,"error":{"code":...,"message":...}}`,
/// `{"v":2,"event":{...}}`. A line with none of `reply`, `error` and `event`, with more than one,
/// or a reply without `id`, does not decode.
public enum WorkerMessage: Codable, Sendable, Equatable {
    case reply(id: UInt64, WorkerReply)
    case failure(id: UInt64, VDEError)
    case event(WorkerEvent)

    private enum CodingKeys: String, CodingKey { case v, id, reply, error, event }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try WorkerProtocol.checkVersion(container, key: .v)
        let bodies = [CodingKeys.reply, .error, .event].filter { container.contains($0) }
        guard bodies.count == 1, let body = bodies.first else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription:
                        "a worker message has exactly one of 'reply', 'error' and 'event' (found \(bodies.count))"))
        }
        switch body {
        case .reply:
            self = .reply(
                id: try container.decode(UInt64.self, forKey: .id),
                try container.decode(WorkerReply.self, forKey: .reply))
        case .error:
            self = .failure(
                id: try container.decode(UInt64.self, forKey: .id), try container.decode(VDEError.self, forKey: .error))
        default: self = .event(try container.decode(WorkerEvent.self, forKey: .event))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(WorkerProtocol.version, forKey: .v)
        switch self {
        case .reply(let id, let reply):
            try container.encode(id, forKey: .id)
            try container.encode(reply, forKey: .reply)
        case .failure(let id, let error):
            try container.encode(id, forKey: .id)
            try container.encode(error, forKey: .error)
        case .event(let event):
            try container.encode(event, forKey: .event)
        }
    }
}
