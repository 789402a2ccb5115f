import Foundation
import Shared
import Synchronization

/// Talks the Docker plugin protocol to a supervisor's socket, the way dockerd does, and
/// remembers every network and endpoint ID it created so fixtures can clean up after a
/// failed test.
struct PluginClient: Sendable {
    let socket: String
    let seen = SeenIDs()

    final class SeenIDs: Sendable {
        private let state = Mutex<(networks: [String], endpoints: [String])>(([], []))
        func network(_ id: String) { state.withLock { if !$0.networks.contains(id) { $0.networks.append(id) } } }
        func endpoint(_ id: String) { state.withLock { if !$0.endpoints.contains(id) { $0.endpoints.append(id) } } }
        var networks: [String] { state.withLock { $0.networks } }
        var endpoints: [String] { state.withLock { $0.endpoints } }
    }

    /// POSTs raw bytes (an empty body for the no-argument calls, as dockerd does).
    func post(_ path: String, raw body: [UInt8] = [], timeout: Duration = .seconds(60)) async throws -> HTTPReply {
        try await UnixHTTPClient.post(socket: socket, path: path, body: body, timeout: timeout)
    }

    /// POSTs a request encoded as JSON.
    func post<Request: Encodable>(_ path: String, _ request: Request, timeout: Duration = .seconds(60)) async throws
        -> HTTPReply
    {
        note(request)
        return try await post(path, raw: try JSONCoding.encode(request), timeout: timeout)
    }

    /// POSTs and requires a 2xx JSON reply without an error field; decodes it.
    func ok<Response: Decodable>(
        _ path: String, _ request: some Encodable, as: Response.Type, timeout: Duration = .seconds(60)
    ) async throws -> Response {
        try decodeOK(path, try await post(path, request, timeout: timeout))
    }

    /// Same for a call with an empty body.
    func ok<Response: Decodable>(_ path: String, as: Response.Type) async throws -> Response {
        try decodeOK(path, try await post(path))
    }

    /// POSTs and requires a 2xx reply; ignores its content beyond checking it is JSON.
    func ok(_ path: String, _ request: some Encodable, timeout: Duration = .seconds(60)) async throws {
        _ = try decodeOK(path, try await post(path, request, timeout: timeout)) as JSONObject
    }

    /// POSTs and requires a refusal: a non-2xx status with a non-empty `Err`. Returns both.
    func refused(_ path: String, _ request: some Encodable) async throws -> (status: Int, message: String) {
        try refusal(path, try await post(path, request))
    }

    func refusal(_ path: String, _ reply: HTTPReply) throws -> (status: Int, message: String) {
        guard !reply.isSuccess else {
            throw AcceptanceFailure("\(path) should have been refused, but got \(reply)")
        }
        guard let error = try? JSONCoding.decode(DockerAPI.ErrorResponse.self, from: reply.body), !error.Err.isEmpty
        else {
            throw AcceptanceFailure("\(path) refusal should carry a JSON body with a non-empty Err, got \(reply)")
        }
        return (reply.status, error.Err)
    }

    private func decodeOK<Response: Decodable>(_ path: String, _ reply: HTTPReply) throws -> Response {
        guard reply.isSuccess else { throw AcceptanceFailure("\(path) failed: \(reply)") }
        if let object = try? JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any] {
            for key in ["Err", "Error"] {
                if let message = object[key] as? String, !message.isEmpty {
                    throw AcceptanceFailure("\(path) answered \(reply.status) but carries an error: \(message)")
                }
            }
        }
        do {
            return try JSONCoding.decode(Response.self, from: reply.body)
        } catch {
            throw AcceptanceFailure(
                "\(path) reply does not decode as \(Response.self): \(error); body: \(reply.bodyText)")
        }
    }

    private func note(_ request: some Encodable) {
        switch request {
        case let r as DockerAPI.CreateNetworkRequest: seen.network(r.NetworkID.rawValue)
        case let r as DockerAPI.CreateEndpointRequest:
            seen.network(r.NetworkID.rawValue)
            seen.endpoint(r.EndpointID.rawValue)
        default: break
        }
    }
}

/// Any JSON object, for replies whose content a test does not look into.
struct JSONObject: Decodable {
    init(from decoder: any Decoder) throws {
        _ = try decoder.container(keyedBy: AnyKey.self)
    }
    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// Builders for the requests dockerd sends, with its defaults filled in. IDs are the tests' own
/// (``IDs/dockerID()``): they pass the rules, or the test stops at once.
enum Requests {
    static func createNetwork(
        _ id: String, pool: String, gateway: String?, options: [String: String] = [:], v6: DockerAPI.IPAMData? = nil
    ) -> DockerAPI.CreateNetworkRequest {
        DockerAPI.CreateNetworkRequest(
            NetworkID: NetworkID(stringLiteral: id),
            Options: [
                DockerAPI.genericOptionsKey: .map(options),
                "com.docker.network.enable_ipv6": .bool(v6 != nil),
            ],
            IPv4Data: [
                DockerAPI.IPAMData(AddressSpace: "LocalDefault", Pool: pool, Gateway: gateway, AuxAddresses: [:])
            ],
            IPv6Data: v6.map { [$0] } ?? [])
    }

    static func createEndpoint(network: String, endpoint: String, address: String, mac: String = "")
        -> DockerAPI.CreateEndpointRequest
    {
        DockerAPI.CreateEndpointRequest(
            NetworkID: NetworkID(stringLiteral: network), EndpointID: EndpointID(stringLiteral: endpoint),
            Interface: DockerAPI.EndpointInterface(
                Address: address, AddressIPv6: "", MacAddress: mac.isEmpty ? nil : MACAddress(stringLiteral: mac)),
            Options: ["com.docker.network.endpoint.exposedports": .other, "com.docker.network.portmap": .other])
    }

    static func join(network: String, endpoint: String, sandbox: String) -> DockerAPI.JoinRequest {
        DockerAPI.JoinRequest(
            NetworkID: NetworkID(stringLiteral: network), EndpointID: EndpointID(stringLiteral: endpoint),
            SandboxKey: SandboxKey(stringLiteral: sandbox), Options: [:])
    }

    static func endpoint(_ network: String, _ endpoint: String) -> DockerAPI.EndpointRequest {
        DockerAPI.EndpointRequest(
            NetworkID: NetworkID(stringLiteral: network), EndpointID: EndpointID(stringLiteral: endpoint))
    }

    static func network(_ id: String) -> DockerAPI.NetworkRequest {
        DockerAPI.NetworkRequest(NetworkID: NetworkID(stringLiteral: id))
    }

    /// The tap the plugin makes for an endpoint (the one rule, ``TapName/init(endpoint:)``).
    static func tap(of endpoint: String) -> String {
        TapName(endpoint: EndpointID(stringLiteral: endpoint)).rawValue
    }
}

/// The request dockerd sends for Program/RevokeExternalConnectivity.
struct ExternalConnectivityRequest: Encodable {
    var NetworkID: String
    var EndpointID: String
    var Options: [String: String] = [:]
}
