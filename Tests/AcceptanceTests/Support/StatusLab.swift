import Glibc
import Shared
import Testing

/// An endpoint the status tests created, joined, and moved into one of their namespaces.
struct StatusEndpoint: Sendable {
    var id: String
    var tap: String
    var mac: String
    /// With its prefix length, as given to CreateEndpoint (`10.205.0.10/24`).
    var address: String
    var namespace: NetNS
    /// The address without its prefix length.
    var ip: String { String(address.split(separator: "/")[0]) }
}

/// Sets up what the status tests look at, playing dockerd's part (as DataPathTests does), and
/// takes it down again in the order dockerd would, also when the test failed.
enum StatusLab {
    /// Creates, joins and moves into its namespace one endpoint per (address, namespace); runs
    /// `body`; then leaves, moves back and deletes every endpoint. On failure the teardown is
    /// best effort (the supervisor fixture and NetNS remove what is left) and the error is kept.
    static func withEndpoints<T>(
        _ client: PluginClient, network: String, _ layout: [(address: String, namespace: NetNS)],
        _ body: ([StatusEndpoint]) async throws -> T
    ) async throws -> T {
        var made: [StatusEndpoint] = []
        do {
            for (address, ns) in layout {
                let endpoint = IDs.dockerID()
                let created = try await client.ok(
                    "/NetworkDriver.CreateEndpoint",
                    Requests.createEndpoint(network: network, endpoint: endpoint, address: address),
                    as: DockerAPI.CreateEndpointResponse.self)
                let mac = try #require(created.Interface?.MacAddress?.rawValue, "CreateEndpoint chose no MAC")
                let joined = try await client.ok(
                    "/NetworkDriver.Join",
                    Requests.join(network: network, endpoint: endpoint, sandbox: ns.path),
                    as: DockerAPI.JoinResponse.self)
                let tap = joined.InterfaceName.SrcName.rawValue
                made.append(StatusEndpoint(id: endpoint, tap: tap, mac: mac, address: address, namespace: ns))
                try await ns.adoptAsEth0(tap: tap, mac: mac, address: address)
            }
            let value = try await body(made)
            for endpoint in made {
                try await client.ok("/NetworkDriver.Leave", Requests.endpoint(network, endpoint.id))
                try await moveBack(endpoint)
                try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint.id))
            }
            return value
        } catch {
            for endpoint in made {
                _ = try? await client.post("/NetworkDriver.Leave", Requests.endpoint(network, endpoint.id))
                try? await moveBack(endpoint)
                _ = try? await client.post("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint.id))
            }
            throw error
        }
    }

    /// Creates a network (IPv4 only) with the given driver options.
    static func createNetwork(
        _ client: PluginClient, _ id: String, pool: String, gateway: String, options: [String: String] = [:]
    ) async throws {
        try await client.ok(
            "/NetworkDriver.CreateNetwork", Requests.createNetwork(id, pool: pool, gateway: gateway, options: options))
    }

    static func deleteNetwork(_ client: PluginClient, _ id: String) async throws {
        try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(id))
    }

    /// What dockerd does after Leave: move the link back to the host under its own name.
    static func moveBack(_ endpoint: StatusEndpoint) async throws {
        let ns = endpoint.namespace
        guard try await ns.linkExists("eth0") else { return }
        try await ns.returnEth0(as: endpoint.tap)
    }
}
