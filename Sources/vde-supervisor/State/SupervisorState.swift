import Shared

/// Everything the supervisor knows, as stored in `STATE_DIR/state.json`.
///
/// It holds all that is needed to put every network back after a crash or restart:
/// dockerd never replays CreateNetwork, CreateEndpoint or Join.
struct SupervisorState: Codable, Sendable, Equatable {
    static let currentVersion = 1

    var version = SupervisorState.currentVersion
    var networks: [NetworkID: NetworkRecord] = [:]
    var ipam = IPAMState()

    /// The network that has an endpoint with this ID, if any.
    func network(ofEndpoint endpointID: EndpointID) -> NetworkRecord? {
        networks.values.first { $0.endpoints[endpointID] != nil }
    }

    /// The endpoint using a tap of this name, in any network.
    func endpoint(usingTap tapName: TapName) -> EndpointRecord? {
        for network in networks.values {
            if let endpoint = network.endpoints.values.first(where: { $0.tapName == tapName }) { return endpoint }
        }
        return nil
    }
}

/// One Docker network of the `vde` driver: a value whose fields (``NetworkFields``) sit in one
/// shared, immutable box.
///
/// Why the box: every commit copies the state's dictionary of networks (apply to a copy, then
/// commit) and compares it with the one before (``StateChange/between(_:_:)``). With the fields
/// inline, a copy retained every string and array of every network and a comparison walked them:
/// at 1000 networks that was about 7 ms of each plugin call, over half the supervisor's CPU
/// under a stream of calls (perf, bench/lib/sizecost.py). Boxed, a copy is one retain, and an
/// unchanged record compares equal by identity. A change makes a new box (copying one record).
@dynamicMemberLookup
struct NetworkRecord: Codable, Sendable, Equatable {
    private final class Box: Sendable {
        let fields: NetworkFields
        init(_ fields: NetworkFields) { self.fields = fields }
    }

    private var box: Box

    var fields: NetworkFields { box.fields }

    init(_ fields: NetworkFields) { box = Box(fields) }

    init(
        id: NetworkID, options: NetworkOptions, switchSpec: SwitchSpec, switchStarted: Bool,
        ipv4Data: [DockerAPI.IPAMData],
        ipv6Data: [DockerAPI.IPAMData], poolIDs: [String], endpoints: [EndpointID: EndpointRecord] = [:],
        createdAt: Int64
    ) {
        self.init(
            NetworkFields(
                id: id, options: options, switchSpec: switchSpec, switchStarted: switchStarted, ipv4Data: ipv4Data,
                ipv6Data: ipv6Data, poolIDs: poolIDs, endpoints: endpoints, createdAt: createdAt))
    }

    subscript<T>(dynamicMember field: KeyPath<NetworkFields, T>) -> T { box.fields[keyPath: field] }

    subscript<T>(dynamicMember field: WritableKeyPath<NetworkFields, T>) -> T {
        get { box.fields[keyPath: field] }
        set {
            var fields = box.fields
            fields[keyPath: field] = newValue
            box = Box(fields)
        }
    }

    static func == (lhs: NetworkRecord, rhs: NetworkRecord) -> Bool {
        lhs.box === rhs.box || lhs.box.fields == rhs.box.fields
    }

    init(from decoder: any Decoder) throws { box = Box(try NetworkFields(from: decoder)) }

    func encode(to encoder: any Encoder) throws { try box.fields.encode(to: encoder) }

    /// The key of `Decoder.userInfo` under which the state's reader passes the supervisor's run
    /// dir: records written before `networkDir` existed get theirs from it, here and only here.
    static let runDirKey: CodingUserInfoKey = {
        guard let key = CodingUserInfoKey(rawValue: "vde.runDir") else { preconditionFailure("a valid user-info key") }
        return key
    }()

    var ownsSwitch: Bool { fields.switchStarted }

    /// The IPv4 gateway without prefix length, if the network has one.
    var gatewayIPv4: String? { fields.ipv4Data.lazy.compactMap { $0.Gateway }.first.map(Self.stripPrefix) }
    var gatewayIPv6: String? { fields.ipv6Data.lazy.compactMap { $0.Gateway }.first.map(Self.stripPrefix) }

    static func stripPrefix(_ cidr: String) -> String {
        cidr.split(separator: "/", maxSplits: 1).first.map(String.init) ?? cidr
    }

    /// What a worker needs to (re)create the endpoints of this network.
    var endpointSpecs: [EndpointSpec] {
        fields.endpoints.values.sorted { $0.id < $1.id }.map(\.spec)
    }
}

/// What a ``NetworkRecord`` holds.
struct NetworkFields: Codable, Sendable, Equatable {
    var id: NetworkID
    var options: NetworkOptions
    /// The switch as the user asked for it: `mode` is the intent (`own`, `useOrCreate`,
    /// `external`) and never changes; `paths` are the network's paths, computed once.
    var switchSpec: SwitchSpec
    /// The fact: true when the plugin started the network's switch (the worker's
    /// `SwitchStatus.owned` at the last start), false when it used one that was running.
    var switchStarted: Bool
    var ipv4Data: [DockerAPI.IPAMData]
    var ipv6Data: [DockerAPI.IPAMData]
    /// The vde IPAM pools serving this network (empty with Docker's default IPAM).
    var poolIDs: [String]
    var endpoints: [EndpointID: EndpointRecord] = [:]
    /// Seconds since the epoch.
    var createdAt: Int64

    init(
        id: NetworkID, options: NetworkOptions, switchSpec: SwitchSpec, switchStarted: Bool,
        ipv4Data: [DockerAPI.IPAMData],
        ipv6Data: [DockerAPI.IPAMData], poolIDs: [String], endpoints: [EndpointID: EndpointRecord] = [:],
        createdAt: Int64
    ) {
        self.id = id
        self.options = options
        self.switchSpec = switchSpec
        self.switchStarted = switchStarted
        self.ipv4Data = ipv4Data
        self.ipv6Data = ipv6Data
        self.poolIDs = poolIDs
        self.endpoints = endpoints
        self.createdAt = createdAt
    }

    private enum CodingKeys: String, CodingKey {
        case id, options, switchSpec, switchStarted, ipv4Data, ipv6Data, poolIDs, endpoints, createdAt
    }

    /// The switch as older state files stored it: no `networkDir`.
    private struct StoredSwitchSpec: Decodable {
        var networkDir: String?
        var ctlDir: String
        var managementSocket: String?
        var mode: SwitchMode
        var group: GroupName?
        var numPorts: Int
        /// Absent in records from before the MTU and `hub` existed (and when unset or false).
        var mtu: Int?
        var hub: Bool?
        /// Absent in records from before uplinks (and when the network has none).
        var uplink: UplinkURL?
    }

    /// Reads a record, migrating one written by an older version:
    /// - `networkDir` missing: `<run dir>/<short ID>` (what the worker derived then);
    /// - `switchStarted` missing: the old record's `mode` was the fact, overwritten after the
    ///   first start (`own` when the plugin started the switch); the intent comes back from the
    ///   options: `socket_dir` with `create_sockets` is `useOrCreate`, `socket_dir` alone
    ///   `external`, neither `own`.
    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(NetworkID.self, forKey: .id)
        options = try container.decode(NetworkOptions.self, forKey: .options)
        ipv4Data = try container.decode([DockerAPI.IPAMData].self, forKey: .ipv4Data)
        ipv6Data = try container.decode([DockerAPI.IPAMData].self, forKey: .ipv6Data)
        poolIDs = try container.decode([String].self, forKey: .poolIDs)
        endpoints = try container.decodeIfPresent([EndpointID: EndpointRecord].self, forKey: .endpoints) ?? [:]
        createdAt = try container.decode(Int64.self, forKey: .createdAt)
        let stored = try container.decode(StoredSwitchSpec.self, forKey: .switchSpec)
        let networkDir: String
        if let recorded = stored.networkDir {
            networkDir = recorded
        } else if let runDir = decoder.userInfo[NetworkRecord.runDirKey] as? String {
            networkDir = NetworkPaths.networkDir(runDir: runDir, network: id)
        } else {
            throw DecodingError.keyNotFound(
                StoredKey.networkDir,
                DecodingError.Context(
                    codingPath: container.codingPath + [CodingKeys.switchSpec],
                    debugDescription: "an old record without networkDir needs the supervisor's run dir to be read"))
        }
        var mode = stored.mode
        if let started = try container.decodeIfPresent(Bool.self, forKey: .switchStarted) {
            switchStarted = started
        } else {
            switchStarted = stored.mode == .own
            if options.socketDir != nil { mode = options.createSockets ? .useOrCreate : .external }
        }
        do {
            let paths = try NetworkPaths(
                networkDir: networkDir, ctlDir: stored.ctlDir, managementSocket: stored.managementSocket)
            switchSpec = try SwitchSpec(
                paths: paths, mode: mode, group: stored.group, numPorts: stored.numPorts, mtu: stored.mtu,
                hub: stored.hub ?? false, uplink: stored.uplink)
        } catch {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(
                    codingPath: container.codingPath + [CodingKeys.switchSpec], debugDescription: error.message))
        }
    }

    private enum StoredKey: String, CodingKey { case networkDir }
}

/// One container attachment: a tap plugged into the network's switch.
struct EndpointRecord: Codable, Sendable, Equatable {
    var id: EndpointID
    var networkID: NetworkID
    var tapName: TapName
    var macAddress: MACAddress
    /// True when dockerd gave no MAC and the plugin chose one.
    var macGenerated: Bool
    /// `ip/prefix` as dockerd assigned it, if any.
    var address: String?
    var addressIPv6: String?
    /// The container's netns, from Join; nil before Join and after Leave.
    var sandboxKey: SandboxKey?
    /// The endpoint's link: its network's `-o link_*` default overlaid with its own
    /// `--driver-opt link_*` at CreateEndpoint, then changed live by `vde-supervisor link`.
    /// Computed here, in the supervisor, and only handed on; nil: unimpaired and up.
    var link: LinkSettings?

    var spec: EndpointSpec {
        EndpointSpec(
            endpointID: id, tapName: tapName, macAddress: macAddress, sandboxKey: sandboxKey,
            ipv4Address: address.flatMap { try? IPv4Address(NetworkRecord.stripPrefix($0)) }, link: link)
    }
}
