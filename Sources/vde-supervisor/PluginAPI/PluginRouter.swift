import Logging
import Shared

/// A reply to one plugin call: an HTTP status and a JSON body.
struct PluginReply: Sendable, Equatable {
    var status: Int
    var body: [UInt8]
}

/// Maps `POST /<Kind>.<Method>` to the plugin's handlers: decodes the JSON body into
/// dockerd's request type, encodes the reply, and turns every error into a non-2xx status
/// with `{"Err": ...}` (IPAM calls also carry `Error`).
struct PluginRouter: Sendable {
    typealias Handler = @Sendable (VDEPlugin, [UInt8]) async throws -> [UInt8]

    let plugin: VDEPlugin
    let logger: Logger
    private let routes: [String: Handler]

    init(plugin: VDEPlugin, logger: Logger) {
        self.plugin = plugin
        self.logger = logger
        self.routes = Self.makeRoutes()
    }

    /// All paths served; everything else is 404.
    static var paths: [String] { Array(makeRoutes().keys).sorted() }

    func reply(method: String, path: String, body: [UInt8]) async -> PluginReply {
        let isIPAM = path.hasPrefix("/IpamDriver.")
        guard let handler = routes[path] else {
            return Self.errorReply(
                status: 404, "unknown plugin call \(UntrustedText(path)) (this is the vde network and IPAM plugin)",
                ipam: isIPAM)
        }
        guard method == "POST" else {
            return Self.errorReply(status: 405, "plugin calls use POST, not \(UntrustedText(method))", ipam: isIPAM)
        }
        do {
            return PluginReply(status: 200, body: try await handler(plugin, body))
        } catch let error as DecodingError {
            return Self.errorReply(
                status: 400, "malformed request body for \(path.dropFirst()): \(JSONCoding.describe(error))",
                ipam: isIPAM)
        } catch {
            let vdeError = VDEError(wrapping: error)
            if vdeError.code == .internal {
                logger.error("internal error", metadata: ["path": "\(path)", "error": "\(vdeError.message)"])
            }
            return Self.errorReply(status: Self.httpStatus(for: vdeError.code), vdeError.message, ipam: isIPAM)
        }
    }

    static func errorReply(status: Int, _ message: String, ipam: Bool) -> PluginReply {
        let body =
            (try? JSONCoding.encode(DockerAPI.ErrorResponse(message: message, ipam: ipam)))
            ?? Array(#"{"Err":"error"}"#.utf8)
        return PluginReply(status: status, body: body)
    }

    static func httpStatus(for code: VDEError.Code) -> Int {
        switch code {
        case .invalidArgument: 400
        case .notFound: 404
        case .conflict, .exhausted: 409
        case .unavailable: 503
        case .system, .internal: 500
        }
    }

    // MARK: routes

    private static func makeRoutes() -> [String: Handler] {
        var routes: [String: Handler] = [:]
        /// A call without arguments: dockerd sends an empty body.
        func plain<Response: Encodable & Sendable>(
            _ path: String, _ body: @escaping @Sendable (VDEPlugin) async throws -> Response
        ) {
            routes[path] = { plugin, _ in try JSONCoding.encode(try await body(plugin)) }
        }
        /// A call with a JSON request body.
        func call<Request: Decodable & Sendable, Response: Encodable & Sendable>(
            _ path: String, _ type: Request.Type,
            _ body: @escaping @Sendable (VDEPlugin, Request) async throws -> Response
        ) {
            routes[path] = { plugin, bytes in
                guard !bytes.isEmpty else {
                    throw VDEError.invalid("empty request body for \(path.dropFirst()); a JSON object was expected")
                }
                let request = try JSONCoding.decode(Request.self, from: bytes)
                return try JSONCoding.encode(try await body(plugin, request))
            }
        }

        plain("/Plugin.Activate") { _ in DockerAPI.ActivateResponse(Implements: ["NetworkDriver", "IpamDriver"]) }

        plain("/NetworkDriver.GetCapabilities") { _ in DockerAPI.CapabilitiesResponse() }
        call("/NetworkDriver.CreateNetwork", DockerAPI.CreateNetworkRequest.self) { try await $0.createNetwork($1) }
        call("/NetworkDriver.DeleteNetwork", DockerAPI.NetworkRequest.self) { try await $0.deleteNetwork($1) }
        call("/NetworkDriver.CreateEndpoint", DockerAPI.CreateEndpointRequest.self) { try await $0.createEndpoint($1) }
        call("/NetworkDriver.DeleteEndpoint", DockerAPI.EndpointRequest.self) { try await $0.deleteEndpoint($1) }
        call("/NetworkDriver.EndpointOperInfo", DockerAPI.EndpointRequest.self) { try await $0.endpointOperInfo($1) }
        call("/NetworkDriver.Join", DockerAPI.JoinRequest.self) { try await $0.join($1) }
        call("/NetworkDriver.Leave", DockerAPI.EndpointRequest.self) { try await $0.leave($1) }
        // Nothing to do for these: the vde driver has no external connectivity and no swarm scope.
        for path in [
            "/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.RevokeExternalConnectivity",
            "/NetworkDriver.AllocateNetwork", "/NetworkDriver.FreeNetwork",
            "/NetworkDriver.DiscoverNew", "/NetworkDriver.DiscoverDelete",
        ] {
            routes[path] = { _, _ in Array("{}".utf8) }
        }

        plain("/IpamDriver.GetCapabilities") { _ in DockerAPI.IPAMCapabilitiesResponse() }
        plain("/IpamDriver.GetDefaultAddressSpaces") { _ in
            DockerAPI.AddressSpacesResponse(
                LocalDefaultAddressSpace: VDEPlugin.localAddressSpace,
                GlobalDefaultAddressSpace: VDEPlugin.globalAddressSpace)
        }
        call("/IpamDriver.RequestPool", DockerAPI.RequestPoolRequest.self) { try await $0.requestPool($1) }
        call("/IpamDriver.ReleasePool", DockerAPI.ReleasePoolRequest.self) { try await $0.releasePool($1) }
        call("/IpamDriver.RequestAddress", DockerAPI.RequestAddressRequest.self) { try await $0.requestAddress($1) }
        call("/IpamDriver.ReleaseAddress", DockerAPI.ReleaseAddressRequest.self) { try await $0.releaseAddress($1) }
        return routes
    }
}
