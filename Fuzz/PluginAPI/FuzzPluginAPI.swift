/// libFuzzer target: one plugin API call as dockerd sends it, decoded as the supervisor's
/// `PluginRouter` decodes it, then checked the way the handlers check it first.
///
/// Input: the call's path on the first line (`/NetworkDriver.CreateNetwork`), the JSON body
/// after it. An input whose first line is no known path picks a route by its first byte and
/// uses everything after the first newline as the body, so that no input is wasted.
/// Built by `scripts/fuzz` together with the Shared sources (one module, no `import Shared`).

/// The calls with a JSON body, as in `PluginRouter.makeRoutes` (`call(path, Type.self)`):
/// `scripts/fuzz` refuses to build when this list and PluginRouter.swift differ.
let routes: [(path: String, decode: ([UInt8]) throws -> Void)] = [
    (
        "/NetworkDriver.CreateNetwork",
        { try checkCreateNetwork(JSONCoding.decode(DockerAPI.CreateNetworkRequest.self, from: $0)) }
    ),
    (
        "/NetworkDriver.DeleteNetwork",
        { try checkID(JSONCoding.decode(DockerAPI.NetworkRequest.self, from: $0).NetworkID) }
    ),
    (
        "/NetworkDriver.CreateEndpoint",
        { try checkCreateEndpoint(JSONCoding.decode(DockerAPI.CreateEndpointRequest.self, from: $0)) }
    ),
    (
        "/NetworkDriver.DeleteEndpoint",
        { try checkEndpoint(JSONCoding.decode(DockerAPI.EndpointRequest.self, from: $0)) }
    ),
    (
        "/NetworkDriver.EndpointOperInfo",
        { try checkEndpoint(JSONCoding.decode(DockerAPI.EndpointRequest.self, from: $0)) }
    ),
    ("/NetworkDriver.Join", { try checkJoin(JSONCoding.decode(DockerAPI.JoinRequest.self, from: $0)) }),
    ("/NetworkDriver.Leave", { try checkEndpoint(JSONCoding.decode(DockerAPI.EndpointRequest.self, from: $0)) }),
    ("/IpamDriver.RequestPool", { try reencode(JSONCoding.decode(DockerAPI.RequestPoolRequest.self, from: $0)) }),
    ("/IpamDriver.ReleasePool", { try reencode(JSONCoding.decode(DockerAPI.ReleasePoolRequest.self, from: $0)) }),
    ("/IpamDriver.RequestAddress", { try reencode(JSONCoding.decode(DockerAPI.RequestAddressRequest.self, from: $0)) }),
    ("/IpamDriver.ReleaseAddress", { try reencode(JSONCoding.decode(DockerAPI.ReleaseAddressRequest.self, from: $0)) }),
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPluginAPI(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let newline = input.firstIndex(of: UInt8(ascii: "\n"))
    let firstLine = String(decoding: input[..<(newline ?? input.endIndex)], as: UTF8.self)
    let body = newline.map { Array(input[($0 + 1)...]) } ?? input
    let route = routes.first { $0.path == firstLine } ?? routes[Int(input.first ?? 0) % routes.count]
    // PluginRouter: an empty body is refused before decoding.
    guard !body.isEmpty else { return 0 }
    do {
        try route.decode(body)
    } catch {
        // PluginRouter turns the error into the reply body: both must work for any input.
        let message = "malformed request body for \(route.path.dropFirst()): \(JSONCoding.describe(error))"
        let reply = PluginReplyCheck.errorBody(message, ipam: route.path.hasPrefix("/IpamDriver."))
        precondition(!reply.isEmpty, "an error reply must have a body")
    }
    return 0
}

enum PluginReplyCheck {
    static func errorBody(_ message: String, ipam: Bool) -> [UInt8] {
        (try? JSONCoding.encode(DockerAPI.ErrorResponse(message: message, ipam: ipam))) ?? []
    }
}

/// What the supervisor records must encode again (it goes into the state file and the worker link).
func reencode<T: Encodable>(_ value: T) throws {
    _ = try JSONCoding.encode(value)
}

/// IDs were checked by the decode (``NetworkID``, ``EndpointID``): what is derived from them must fit.
func checkID(_ id: NetworkID) throws {
    precondition((try? NetworkID(id.rawValue)) == id, "a decoded network ID must pass its own rule")
    _ = id.short
}

func checkEndpoint(_ request: DockerAPI.EndpointRequest) throws {
    try checkID(request.NetworkID)
    let tap = TapName(endpoint: request.EndpointID)
    precondition((try? TapName(tap.rawValue)) == tap, "tap name \(tap) breaks the tap name rule")
    _ = MACAddress(derivedFrom: request.EndpointID)
}

func checkCreateNetwork(_ request: DockerAPI.CreateNetworkRequest) throws {
    try checkID(request.NetworkID)
    try reencode(request)
    // The user's -o options: parsed, and every message about them printable.
    do {
        _ = try NetworkOptions.parse(request.genericOptions)
    } catch {
        _ = UntrustedText("\(error)").description
    }
}

func checkCreateEndpoint(_ request: DockerAPI.CreateEndpointRequest) throws {
    try checkEndpoint(DockerAPI.EndpointRequest(NetworkID: request.NetworkID, EndpointID: request.EndpointID))
    if let mac = request.Interface?.MacAddress {
        precondition(
            mac.bytes.count == 6 && (try? MACAddress(mac.rawValue)) == mac,
            "a decoded MAC \(mac) must be six bytes and normalised")
    }
    try reencode(request)
}

func checkJoin(_ request: DockerAPI.JoinRequest) throws {
    try checkEndpoint(DockerAPI.EndpointRequest(NetworkID: request.NetworkID, EndpointID: request.EndpointID))
    try reencode(request)
}
