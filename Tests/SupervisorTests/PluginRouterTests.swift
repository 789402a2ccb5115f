import Glibc
import Shared
import Testing

@testable import vde_supervisor

/// The router with a real plugin actor on a temporary state dir; calls that need no worker.
final class PluginRouterTests {
    let directory: String
    let router: PluginRouter

    init() throws {
        var template = Array("/tmp/vde-router-test-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer {
            $0.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/nonexistent"
        }
        let configuration = SupervisorConfiguration(
            socketPath: directory + "/vde.sock", stateDir: directory + "/state", runDir: directory + "/run",
            networkerPath: "/bin/false")
        let plugin = try VDEPlugin(configuration: configuration, logger: .init(label: "test"))
        router = PluginRouter(plugin: plugin, logger: .init(label: "test"))
    }

    deinit {
        for file in ["/state/state.json", "/state/state.json.1", "/state"] { remove(directory + file) }
        rmdir(directory)
    }

    func call(_ path: String, _ body: String = "") async -> (Int, [String: Any]) {
        let reply = await router.reply(method: "POST", path: path, body: Array(body.utf8))
        let object = (try? JSONCoding.decode([String: AnyDecodable].self, from: reply.body))?.mapValues(\.value) ?? [:]
        return (reply.status, object)
    }

    @Test func activateImplementsBothDrivers() async {
        let (status, body) = await call("/Plugin.Activate")
        #expect(status == 200)
        #expect(body["Implements"] as? [String] == ["NetworkDriver", "IpamDriver"])
    }

    @Test func capabilitiesSayLocalScope() async {
        let (status, body) = await call("/NetworkDriver.GetCapabilities")
        #expect(status == 200)
        #expect(body["Scope"] as? String == "local")
        #expect(body["ConnectivityScope"] as? String == "local")
    }

    @Test func unknownPathIs404WithJSON() async {
        let (status, body) = await call("/NetworkDriver.Frobnicate", "{}")
        #expect(status == 404)
        #expect((body["Err"] as? String)?.contains("unknown plugin call") == true)
    }

    @Test func malformedJSONIs400() async {
        let (status, body) = await call("/NetworkDriver.CreateNetwork", "{not json")
        #expect(status == 400)
        #expect((body["Err"] as? String)?.contains("malformed") == true)
    }

    /// IDs, MACs and sandbox keys are read once, by the request's decode: a bad one is a 400
    /// that names the field and the rule, before any handler runs.
    @Test(arguments: [
        ("/NetworkDriver.DeleteNetwork", #"{"NetworkID":"../etc"}"#, ["NetworkID", "not a Docker ID"]),
        (
            "/NetworkDriver.CreateEndpoint", #"{"NetworkID":"n1","EndpointID":"a b","Interface":{}}"#,
            ["EndpointID", "not a Docker ID"]
        ),
        (
            "/NetworkDriver.CreateEndpoint",
            #"{"NetworkID":"n1","EndpointID":"e1","Interface":{"MacAddress":"01:00:5e:00:00:01"}}"#,
            ["MacAddress", "not a unicast MAC"]
        ),
        (
            "/NetworkDriver.Join", #"{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"relative/ns"}"#,
            ["SandboxKey", "absolute"]
        ),
    ])
    func badIdentitiesAre400NamingTheField(path: String, body: String, words: [String]) async {
        let (status, reply) = await call(path, body)
        #expect(status == 400)
        let message = reply["Err"] as? String ?? ""
        for word in words { #expect(message.contains(word), "\(message)") }
    }

    @Test func emptyBodyWhereArgumentsAreNeededIs400() async {
        let (status, body) = await call("/IpamDriver.RequestPool")
        #expect(status == 400)
        #expect((body["Err"] as? String)?.contains("empty request body") == true)
    }

    @Test func ipamErrorsCarryErrAndError() async {
        let (status, body) = await call("/IpamDriver.RequestPool", #"{"AddressSpace":"vde-local","Pool":""}"#)
        #expect(status == 400)
        #expect(body["Err"] as? String != nil)
        #expect(body["Error"] as? String == body["Err"] as? String)
    }

    @Test func poolAndAddressesThroughTheRouter() async {
        let (status, pool) = await call("/IpamDriver.RequestPool", #"{"Pool":"10.9.0.0/29"}"#)
        #expect(status == 200)
        let poolID = pool["PoolID"] as? String ?? ""
        let (gatewayStatus, gateway) = await call(
            "/IpamDriver.RequestAddress",
            #"{"PoolID":"\#(poolID)","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#)
        #expect(gatewayStatus == 200)
        #expect(gateway["Address"] as? String == "10.9.0.1/29")
        let (_, first) = await call("/IpamDriver.RequestAddress", #"{"PoolID":"\#(poolID)","Address":""}"#)
        #expect(first["Address"] as? String == "10.9.0.2/29")
    }

    @Test func unknownNetworkIsNotFound() async {
        let (status, body) = await call("/NetworkDriver.DeleteNetwork", #"{"NetworkID":"abcdef0123456789"}"#)
        #expect(status == 404)
        #expect((body["Err"] as? String)?.contains("no vde network") == true)
    }

    @Test func badOptionsAreRefusedBeforeAnyWorkerStarts() async {
        let (status, body) = await call(
            "/NetworkDriver.CreateNetwork",
            #"{"NetworkID":"abcdef0123456789","Options":{"com.docker.network.generic":{"socket_dri":"/x"}}}"#)
        #expect(status == 400)
        #expect((body["Err"] as? String)?.contains("known options") == true)
    }

    @Test func hostileIDsAreRefused() async {
        let (status, _) = await call("/NetworkDriver.DeleteNetwork", #"{"NetworkID":"../../etc"}"#)
        #expect(status == 400)
    }
}

/// Decodes any JSON value into Swift values for assertions.
struct AnyDecodable: Decodable {
    let value: Any

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let string = try? container.decode(String.self) {
            value = string
        } else if let bool = try? container.decode(Bool.self) {
            value = bool
        } else if let int = try? container.decode(Int.self) {
            value = int
        } else if let array = try? container.decode([String].self) {
            value = array
        } else if let object = try? container.decode([String: AnyDecodable].self) {
            value = object.mapValues(\.value)
        } else {
            value = NSNullLike()
        }
    }
}

struct NSNullLike {}
