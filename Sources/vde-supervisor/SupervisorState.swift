import Shared

/// Everything the supervisor knows, as stored in `STATE_DIR/state.json`.
///
/// It holds all that is needed to put every network back after a crash or restart:
/// dockerd never replays CreateNetwork, CreateEndpoint or Join.
struct SupervisorState: Codable, Sendable, Equatable {
    static let currentVersion = 1

    var version = SupervisorState.currentVersion
    var networks: [String: NetworkRecord] = [:]
    var ipam = IPAMState()

    /// The network that has an endpoint with this ID, if any.
    func network(ofEndpoint endpointID: String) -> NetworkRecord? {
        networks.values.first { $0.endpoints[endpointID] != nil }
    }

    /// The endpoint using a tap of this name, in any network.
    func endpoint(usingTap tapName: String) -> EndpointRecord? {
        for network in networks.values {
            if let endpoint = network.endpoints.values.first(where: { $0.tapName == tapName }) { return endpoint }
        }
        return nil
    }
}

/// One Docker network of the `vde` driver.
struct NetworkRecord: Codable, Sendable, Equatable {
    var id: String
    var options: NetworkOptions
    /// The switch as the worker must run it. After the first start, `mode` is `own` when the
    /// worker started the switch (it restarts and finally removes it) and `external` otherwise.
    var switchSpec: SwitchSpec
    var ipv4Data: [DockerAPI.IPAMData]
    var ipv6Data: [DockerAPI.IPAMData]
    /// The vde IPAM pools serving this network (empty with Docker's default IPAM).
    var poolIDs: [String]
    var endpoints: [String: EndpointRecord] = [:]
    /// Seconds since the epoch.
    var createdAt: Int64

    var ownsSwitch: Bool { switchSpec.mode == .own }

    /// The IPv4 gateway without prefix length, if the network has one.
    var gatewayIPv4: String? { ipv4Data.lazy.compactMap { $0.Gateway }.first.map(Self.stripPrefix) }
    var gatewayIPv6: String? { ipv6Data.lazy.compactMap { $0.Gateway }.first.map(Self.stripPrefix) }

    static func stripPrefix(_ cidr: String) -> String {
        cidr.split(separator: "/", maxSplits: 1).first.map(String.init) ?? cidr
    }

    /// What a worker needs to (re)create the endpoints of this network.
    var endpointSpecs: [EndpointSpec] {
        endpoints.values.sorted { $0.id < $1.id }.map(\.spec)
    }
}

/// One container attachment: a tap plugged into the network's switch.
struct EndpointRecord: Codable, Sendable, Equatable {
    var id: String
    var networkID: String
    var tapName: String
    var macAddress: String
    /// True when dockerd gave no MAC and the plugin chose one.
    var macGenerated: Bool
    /// `ip/prefix` as dockerd assigned it, if any.
    var address: String?
    var addressIPv6: String?
    /// The container's netns, from Join; nil before Join and after Leave.
    var sandboxKey: String?

    var spec: EndpointSpec {
        EndpointSpec(endpointID: id, tapName: tapName, macAddress: macAddress, sandboxKey: sandboxKey,
                     ipv4Address: address.map(NetworkRecord.stripPrefix))
    }
}
