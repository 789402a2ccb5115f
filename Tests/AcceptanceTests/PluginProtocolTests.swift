import Foundation
import Shared
import Testing

extension Acceptance {
    /// Drives every plugin call over the socket the way dockerd does, against the real
    /// supervisor, and checks that bad input is refused clearly and changes nothing.
    @Suite(.timeLimit(.minutes(5)))
    struct PluginProtocolTests {
        @Test func activationAndCapabilities() async throws {
            try await SupervisorFixture.with { supervisor in
                let client = supervisor.client
                let activate = try await client.ok("/Plugin.Activate", as: DockerAPI.ActivateResponse.self)
                #expect(
                    Set(activate.Implements).isSuperset(of: ["NetworkDriver", "IpamDriver"]),
                    "Activate: \(activate.Implements)")

                let capabilities = try await client.ok(
                    "/NetworkDriver.GetCapabilities", as: DockerAPI.CapabilitiesResponse.self)
                #expect(capabilities.Scope == "local")
                #expect(capabilities.ConnectivityScope == "local")

                _ = try await client.ok("/IpamDriver.GetCapabilities", as: DockerAPI.IPAMCapabilitiesResponse.self)
                let spaces = try await client.ok(
                    "/IpamDriver.GetDefaultAddressSpaces", as: DockerAPI.AddressSpacesResponse.self)
                #expect(!spaces.LocalDefaultAddressSpace.isEmpty)
                #expect(!spaces.GlobalDefaultAddressSpace.isEmpty)

                // dockerd does not check the content type, but a JSON reply must be JSON.
                let raw = try await client.post("/NetworkDriver.GetCapabilities")
                #expect((try? JSONSerialization.jsonObject(with: Data(raw.body))) != nil, "reply is not JSON: \(raw)")
            }
        }

        /// The whole life of a network and one container, in dockerd's call order.
        @Test func fullLifecycleInDockerdOrder() async throws {
            try await SupervisorFixture.with { supervisor in
                let client = supervisor.client
                let spaces = try await client.ok(
                    "/IpamDriver.GetDefaultAddressSpaces", as: DockerAPI.AddressSpacesResponse.self)

                // docker network create -d vde --ipam-driver vde --subnet 10.200.1.0/24 --gateway 10.200.1.1
                let pool = try await client.ok(
                    "/IpamDriver.RequestPool",
                    DockerAPI.RequestPoolRequest(
                        AddressSpace: spaces.LocalDefaultAddressSpace, Pool: "10.200.1.0/24", SubPool: "", Options: [:],
                        V6: false),
                    as: DockerAPI.RequestPoolResponse.self)
                #expect(!pool.PoolID.isEmpty)
                #expect(pool.Pool == "10.200.1.0/24")
                let gateway = try await client.ok(
                    "/IpamDriver.RequestAddress",
                    DockerAPI.RequestAddressRequest(
                        PoolID: pool.PoolID, Address: "10.200.1.1",
                        Options: [DockerAPI.requestAddressTypeKey: DockerAPI.gatewayAddressType]),
                    as: DockerAPI.RequestAddressResponse.self)
                #expect(gateway.Address == "10.200.1.1/24")

                let network = IDs.dockerID()
                try await client.ok(
                    "/NetworkDriver.CreateNetwork",
                    Requests.createNetwork(network, pool: "10.200.1.0/24", gateway: "10.200.1.1/24"))
                #expect(supervisor.stateText().contains(network), "state file should record the network")

                // docker run --net N ...
                let address = try await client.ok(
                    "/IpamDriver.RequestAddress",
                    DockerAPI.RequestAddressRequest(PoolID: pool.PoolID, Address: "", Options: [:]),
                    as: DockerAPI.RequestAddressResponse.self)
                #expect(
                    address.Address.hasPrefix("10.200.1.") && address.Address.hasSuffix("/24"),
                    "address \(address.Address)")
                #expect(address.Address != "10.200.1.1/24", "the gateway address must not be handed out automatically")

                let endpoint = IDs.dockerID()
                let created = try await client.ok(
                    "/NetworkDriver.CreateEndpoint",
                    Requests.createEndpoint(network: network, endpoint: endpoint, address: address.Address),
                    as: DockerAPI.CreateEndpointResponse.self)
                let mac = try #require(
                    created.Interface?.MacAddress?.rawValue, "CreateEndpoint without MacAddress must return one")
                try expectLocallyAdministeredUnicast(mac)
                let echoedAddress = created.Interface?.Address ?? ""
                #expect(echoedAddress.isEmpty, "must not re-set the given Address")
                let tap = Requests.tap(of: endpoint)
                #expect(
                    HostInspector.linkExists(tap), "the tap \(tap) must exist in the host netns after CreateEndpoint")

                let joined = try await client.ok(
                    "/NetworkDriver.Join",
                    Requests.join(network: network, endpoint: endpoint, sandbox: "/var/run/docker/netns/acceptance"),
                    as: DockerAPI.JoinResponse.self)
                #expect(joined.InterfaceName.SrcName.rawValue == tap)
                #expect(joined.InterfaceName.DstPrefix == "eth")
                #expect(joined.Gateway == "10.200.1.1")

                let program = try await client.post(
                    "/NetworkDriver.ProgramExternalConnectivity",
                    ExternalConnectivityRequest(NetworkID: network, EndpointID: endpoint))
                #expect(program.isSuccess || program.status == 404, "ProgramExternalConnectivity: \(program)")
                #expect(
                    (try? JSONSerialization.jsonObject(with: Data(program.body))) != nil,
                    "reply must be JSON: \(program)")

                let info = try await client.ok(
                    "/NetworkDriver.EndpointOperInfo",
                    Requests.endpoint(network, endpoint), as: DockerAPI.EndpointOperInfoResponse.self)
                _ = info.Value

                let revoke = try await client.post(
                    "/NetworkDriver.RevokeExternalConnectivity",
                    ExternalConnectivityRequest(NetworkID: network, EndpointID: endpoint))
                #expect(revoke.isSuccess || revoke.status == 404, "RevokeExternalConnectivity: \(revoke)")

                try await client.ok("/NetworkDriver.Leave", Requests.endpoint(network, endpoint))
                try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint))
                try await Poll.until("tap \(tap) to be deleted after DeleteEndpoint") { !HostInspector.linkExists(tap) }
                try await client.ok(
                    "/IpamDriver.ReleaseAddress",
                    DockerAPI.ReleaseAddressRequest(
                        PoolID: pool.PoolID, Address: String(address.Address.split(separator: "/")[0])))

                // docker network rm N
                try await client.ok(
                    "/IpamDriver.ReleaseAddress",
                    DockerAPI.ReleaseAddressRequest(PoolID: pool.PoolID, Address: "10.200.1.1"))
                try await client.ok("/IpamDriver.ReleasePool", DockerAPI.ReleasePoolRequest(PoolID: pool.PoolID))
                try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
                #expect(!supervisor.stateText().contains(network), "state file still mentions the deleted network")
                #expect(!supervisor.stateText().contains(pool.PoolID), "state file still mentions the released pool")
                try await Poll.until("the network's worker and switch to go away") {
                    try HostInspector.vdeProcesses(mentioning: [
                        "--network-id \(network)", network, supervisor.switchDir(network: network),
                    ]).isEmpty
                }
            }
        }

        @Test func createEndpointWithGivenMACReturnsNoInterface() async throws {
            try await SupervisorFixture.with { supervisor in
                let client = supervisor.client
                let network = IDs.dockerID()
                let endpoint = IDs.dockerID()
                try await client.ok(
                    "/NetworkDriver.CreateNetwork",
                    Requests.createNetwork(network, pool: "10.200.9.0/24", gateway: "10.200.9.1/24"))
                let created = try await client.ok(
                    "/NetworkDriver.CreateEndpoint",
                    Requests.createEndpoint(
                        network: network, endpoint: endpoint, address: "10.200.9.20/24", mac: "02:42:0a:c8:09:14"),
                    as: DockerAPI.CreateEndpointResponse.self)
                // dockerd rolls back when a reply re-sets a field it gave.
                let returned = created.Interface ?? DockerAPI.EndpointInterface()
                #expect(
                    returned.MacAddress == nil && (returned.Address ?? "").isEmpty
                        && (returned.AddressIPv6 ?? "").isEmpty,
                    "CreateEndpoint with a MacAddress must not return an Interface: \(returned)")
                let tap = Requests.tap(of: endpoint)
                let link = try await Command.check([NetNS.ip, "-o", "link", "show", "dev", tap])
                #expect(link.stdout.contains("02:42:0a:c8:09:14"), "the tap should carry the given MAC: \(link.stdout)")
                try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint))
                try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
            }
        }

        @Test func ipamRules() async throws {
            try await SupervisorFixture.with { supervisor in
                let client = supervisor.client
                func requestPool(_ pool: String, sub: String = "", v6: Bool = false) async throws
                    -> DockerAPI.RequestPoolResponse
                {
                    try await client.ok(
                        "/IpamDriver.RequestPool",
                        DockerAPI.RequestPoolRequest(
                            AddressSpace: "LocalDefault", Pool: pool, SubPool: sub, Options: [:], V6: v6),
                        as: DockerAPI.RequestPoolResponse.self)
                }
                func request(_ poolID: String, _ address: String = "", gateway: Bool = false) async throws -> HTTPReply
                {
                    try await client.post(
                        "/IpamDriver.RequestAddress",
                        DockerAPI.RequestAddressRequest(
                            PoolID: poolID, Address: address,
                            Options: gateway ? [DockerAPI.requestAddressTypeKey: DockerAPI.gatewayAddressType] : [:]))
                }
                func address(_ reply: HTTPReply) throws -> String {
                    guard reply.isSuccess else { throw AcceptanceFailure("RequestAddress failed: \(reply)") }
                    return try JSONCoding.decode(DockerAPI.RequestAddressResponse.self, from: reply.body).Address
                }

                // Overlapping subnets are allowed: two pools of the same subnet, one network after
                // the other (CreateNetwork does not say which pool it uses, so the plugin refuses a
                // second pool of a subnet until the first is bound to its network).
                let a = try await requestPool("10.200.3.0/29")
                let (pendingStatus, pending) = try await client.refused(
                    "/IpamDriver.RequestPool",
                    DockerAPI.RequestPoolRequest(
                        AddressSpace: "LocalDefault", Pool: "10.200.3.0/29", SubPool: "", Options: [:], V6: false))
                #expect(pendingStatus == 409 && pending.contains("retry"), "\(pendingStatus) \(pending)")
                let networkA = IDs.dockerID()
                try await client.ok(
                    "/NetworkDriver.CreateNetwork",
                    Requests.createNetwork(networkA, pool: "10.200.3.0/29", gateway: nil))
                #expect(supervisor.stateText().contains(a.PoolID))
                let b = try await requestPool("10.200.3.0/29")
                #expect(a.PoolID != b.PoolID, "two pools of one subnet need distinct IDs")

                // The gateway is never handed out automatically; a /29 has hosts .1-.6.
                #expect(try address(try await request(a.PoolID, "10.200.3.1", gateway: true)) == "10.200.3.1/29")
                var automatic: [String] = []
                for _ in 0..<5 { automatic.append(try address(try await request(a.PoolID))) }
                #expect(
                    Set(automatic) == [
                        "10.200.3.2/29", "10.200.3.3/29", "10.200.3.4/29", "10.200.3.5/29", "10.200.3.6/29",
                    ],
                    "automatic addresses: \(automatic)")
                let exhausted = try client.refusal("/IpamDriver.RequestAddress", try await request(a.PoolID))
                #expect(!exhausted.message.isEmpty)

                // A container may take the gateway address explicitly, once.
                #expect(try address(try await request(b.PoolID, "10.200.3.1", gateway: true)) == "10.200.3.1/29")
                #expect(try address(try await request(b.PoolID, "10.200.3.1")) == "10.200.3.1/29")
                _ = try client.refusal("/IpamDriver.RequestAddress", try await request(b.PoolID, "10.200.3.1"))
                // The other pool of the same subnet is independent.
                #expect(try address(try await request(b.PoolID, "10.200.3.2")) == "10.200.3.2/29")
                // Outside the subnet.
                _ = try client.refusal("/IpamDriver.RequestAddress", try await request(b.PoolID, "10.200.4.9"))

                // --ip-range is honoured.
                let ranged = try await requestPool("10.200.5.0/24", sub: "10.200.5.128/26")
                for _ in 0..<3 {
                    let value = try address(try await request(ranged.PoolID))
                    let last = Int(value.split(separator: "/")[0].split(separator: ".")[3]) ?? -1
                    #expect(
                        (128...191).contains(last) && value.hasSuffix("/24"),
                        "address \(value) outside --ip-range 10.200.5.128/26")
                }

                // IPv6.
                let v6 = try await requestPool("fd00:77:1::/64", v6: true)
                let v6Address = try address(try await request(v6.PoolID))
                #expect(v6Address.hasPrefix("fd00:77:1::") && v6Address.hasSuffix("/64"), "IPv6 address \(v6Address)")

                // Released addresses come back.
                try await client.ok(
                    "/IpamDriver.ReleaseAddress",
                    DockerAPI.ReleaseAddressRequest(PoolID: a.PoolID, Address: "10.200.3.4"))
                #expect(try address(try await request(a.PoolID)) == "10.200.3.4/29")

                for pool in [a, b, ranged, v6] {
                    try await client.ok("/IpamDriver.ReleasePool", DockerAPI.ReleasePoolRequest(PoolID: pool.PoolID))
                }
                try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(networkA))
                _ = try await client.refused(
                    "/IpamDriver.RequestAddress",
                    DockerAPI.RequestAddressRequest(PoolID: a.PoolID, Address: "", Options: [:]))
            }
        }

        /// Each bad request is refused with a clear message, leaves the state file as it was,
        /// and the supervisor goes on serving.
        @Test func badInputIsRefusedAndChangesNothing() async throws {
            try await SupervisorFixture.with { supervisor in
                let client = supervisor.client
                // A known network with an endpoint, so that the state file has content.
                let network = IDs.dockerID()
                let endpoint = IDs.dockerID()
                try await client.ok(
                    "/NetworkDriver.CreateNetwork",
                    Requests.createNetwork(network, pool: "10.200.6.0/24", gateway: "10.200.6.1/24"))
                try await client.ok(
                    "/NetworkDriver.CreateEndpoint",
                    Requests.createEndpoint(network: network, endpoint: endpoint, address: "10.200.6.5/24"))

                func unchanged(_ what: String, _ attempt: () async throws -> Void) async throws {
                    let before = supervisor.stateBytes()
                    try await attempt()
                    #expect(supervisor.stateBytes() == before, "state file changed after \(what)")
                    try await supervisor.assertServes()
                }
                func refusedCreate(_ options: [String: String], mentioning words: [String]) async throws {
                    try await unchanged("CreateNetwork with \(options)") {
                        let id = IDs.dockerID()
                        let (_, message) = try await client.refused(
                            "/NetworkDriver.CreateNetwork",
                            Requests.createNetwork(
                                id, pool: "10.200.7.0/24", gateway: "10.200.7.1/24", options: options))
                        for word in words {
                            #expect(message.contains(word), "error for \(options) should mention '\(word)': \(message)")
                        }
                        #expect(!supervisor.stateText().contains(id))
                        #expect(
                            try !TempDir.exists(supervisor.switchDir(network: id)), "no switch for a refused network")
                    }
                }

                try await unchanged("malformed JSON") {
                    let reply = try await client.post(
                        "/NetworkDriver.CreateNetwork", raw: Array(#"{"NetworkID": "abc", "Options": {"#.utf8))
                    #expect(reply.status == 400, "malformed JSON: \(reply)")
                    _ = try client.refusal("malformed JSON", reply)
                }
                try await unchanged("JSON of the wrong shape") {
                    let reply = try await client.post("/NetworkDriver.CreateEndpoint", raw: Array(#"[1, 2, 3]"#.utf8))
                    #expect((400..<500).contains(reply.status), "wrong shape: \(reply)")
                    _ = try client.refusal("wrong shape", reply)
                }
                try await unchanged("CreateEndpoint on an unknown network") {
                    let unknown = IDs.dockerID()
                    let (_, message) = try await client.refused(
                        "/NetworkDriver.CreateEndpoint",
                        Requests.createEndpoint(network: unknown, endpoint: IDs.dockerID(), address: "10.200.6.9/24"))
                    #expect(message.lowercased().contains("network"), "should say which network is unknown: \(message)")
                }
                try await unchanged("Join of an unknown endpoint") {
                    let (_, message) = try await client.refused(
                        "/NetworkDriver.Join",
                        Requests.join(network: network, endpoint: IDs.dockerID(), sandbox: "/var/run/docker/netns/x"))
                    #expect(message.lowercased().contains("endpoint"), "should say the endpoint is unknown: \(message)")
                }
                try await unchanged("RequestAddress in an unknown pool") {
                    let (_, message) = try await client.refused(
                        "/IpamDriver.RequestAddress",
                        DockerAPI.RequestAddressRequest(PoolID: "no-such-pool", Address: "", Options: [:]))
                    #expect(message.lowercased().contains("pool"), "should say the pool is unknown: \(message)")
                }
                try await unchanged("an unknown path") {
                    let reply = try await client.post("/NetworkDriver.NoSuchCall", raw: Array("{}".utf8))
                    #expect(reply.status == 404, "unknown path: \(reply)")
                    #expect(
                        (try? JSONSerialization.jsonObject(with: Data(reply.body))) != nil,
                        "404 body must be JSON: \(reply)")
                }
                try await unchanged("a body over 1 MiB") {
                    var body = Array(#"{"NetworkID":""#.utf8)
                    body += [UInt8](repeating: UInt8(ascii: "a"), count: 1_100_000)
                    body += Array(#""}"#.utf8)
                    let reply = try await client.post("/NetworkDriver.CreateNetwork", raw: body)
                    #expect(reply.status == 413, "oversized body: \(reply.status) \(reply.bodyText.prefix(300))")
                }
                try await unchanged("a request that is not HTTP") {
                    let raw = try await UnixHTTPClient.exchange(
                        socket: supervisor.socket, bytes: Array("HELLO\r\n\r\n".utf8), timeout: .seconds(20))
                    try #require(!raw.isEmpty, "no reply to a request that is not HTTP")
                    let reply = try UnixHTTPClient.parse(raw)
                    #expect((400..<500).contains(reply.status), "garbage request: \(reply)")
                }
                try await refusedCreate(["bogus_option": "1"], mentioning: ["bogus_option"] + NetworkOptions.knownKeys)
                try await refusedCreate(["socket_dir": "/tmp/../x"], mentioning: ["socket_dir"])
                try await refusedCreate(["socket_dir": "relative/dir"], mentioning: ["socket_dir"])
                try await refusedCreate(["num_switchports": "99999999999"], mentioning: ["num_switchports"])
                try await refusedCreate(["num_switchports": "abc"], mentioning: ["num_switchports"])
                try await refusedCreate(["create_sockets": "maybe"], mentioning: ["create_sockets"])
                try await unchanged("RequestPool without Pool") {
                    let (_, message) = try await client.refused(
                        "/IpamDriver.RequestPool",
                        DockerAPI.RequestPoolRequest(
                            AddressSpace: "LocalDefault", Pool: "", SubPool: "", Options: [:], V6: false))
                    #expect(
                        message.contains("subnet") || message.contains("Pool") || message.contains("pool"),
                        "should ask for --subnet: \(message)")
                }
                try await unchanged("RequestPool with a malformed subnet") {
                    _ = try await client.refused(
                        "/IpamDriver.RequestPool",
                        DockerAPI.RequestPoolRequest(
                            AddressSpace: "LocalDefault", Pool: "10.300.0.0/24", SubPool: "", Options: [:], V6: false))
                }
                // Every address dockerd sends is parsed and must lie in the network's subnet.
                for (address, word) in [
                    ("999.1.2.3/24", "999"), ("10.200.99.5/24", "10.200.6.0/24"), ("fd00::5/64", "IPv6"),
                ] {
                    try await unchanged("CreateEndpoint with Interface.Address \(address)") {
                        let id = IDs.dockerID()
                        let (status, message) = try await client.refused(
                            "/NetworkDriver.CreateEndpoint",
                            Requests.createEndpoint(network: network, endpoint: id, address: address))
                        #expect(status == 400, "\(address): \(status) \(message)")
                        #expect(
                            message.contains("Interface.Address") && message.contains(word), "\(address): \(message)")
                        #expect(!HostInspector.linkExists(Requests.tap(of: id)), "no tap for a refused endpoint")
                    }
                }
                for (gateway, aux) in [("10.200.8.1/24", "10.200.7.2"), ("10.200.7.1/24", "10.200.7.300")] {
                    try await unchanged("CreateNetwork with Gateway \(gateway) and AuxAddresses \(aux)") {
                        let id = IDs.dockerID()
                        var request = Requests.createNetwork(id, pool: "10.200.7.0/24", gateway: gateway)
                        request.IPv4Data?[0].AuxAddresses = ["router": aux]
                        let (_, message) = try await client.refused("/NetworkDriver.CreateNetwork", request)
                        #expect(message.contains("IPv4Data[0]."), "should name the field: \(message)")
                        #expect(
                            try !TempDir.exists(supervisor.switchDir(network: id)), "no switch for a refused network")
                    }
                }
                let pool = try await client.ok(
                    "/IpamDriver.RequestPool",
                    DockerAPI.RequestPoolRequest(AddressSpace: "vde-local", Pool: "10.200.10.0/24"),
                    as: DockerAPI.RequestPoolResponse.self)
                try await unchanged("ReleaseAddress of an address that is no address") {
                    let (status, message) = try await client.refused(
                        "/IpamDriver.ReleaseAddress",
                        DockerAPI.ReleaseAddressRequest(PoolID: pool.PoolID, Address: "10.200.10.999"))
                    #expect(status == 400 && message.contains("not a valid IP address"), "\(status) \(message)")
                }
                try await client.ok("/IpamDriver.ReleasePool", DockerAPI.ReleasePoolRequest(PoolID: pool.PoolID))
                // dockerd sends DeleteNetwork only when it has no endpoint left on the network (and
                // forgets the network whatever the answer): an endpoint still recorded then is one
                // whose DeleteEndpoint failed; it goes with the network, and so does its tap.
                #expect(HostInspector.linkExists(Requests.tap(of: endpoint)))
                try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
                #expect(
                    !HostInspector.linkExists(Requests.tap(of: endpoint)),
                    "the tap of an endpoint Docker no longer has must go with its network")
                #expect(!supervisor.stateText().contains(endpoint))
                #expect(!supervisor.stateText().contains(network))
            }
        }

        /// A sandbox key is a path, not a socket path: one longer than a unix socket path joins.
        @Test func joinTakesASandboxKeyLongerThanASocketPath() async throws {
            try await SupervisorFixture.with { supervisor in
                let client = supervisor.client
                let network = IDs.dockerID()
                let endpoint = IDs.dockerID()
                try await client.ok(
                    "/NetworkDriver.CreateNetwork",
                    Requests.createNetwork(network, pool: "10.200.11.0/24", gateway: "10.200.11.1/24"))
                try await client.ok(
                    "/NetworkDriver.CreateEndpoint",
                    Requests.createEndpoint(network: network, endpoint: endpoint, address: "10.200.11.5/24"))
                let sandbox = "/var/run/docker/netns/" + String(repeating: "s", count: 100)
                _ = try await client.ok(
                    "/NetworkDriver.Join", Requests.join(network: network, endpoint: endpoint, sandbox: sandbox),
                    as: DockerAPI.JoinResponse.self)
                #expect(supervisor.stateText().contains(sandbox), "the state should record the sandbox key")
                // Raw JSON: the typed request cannot even hold a relative key.
                let body = #"{"NetworkID":"\#(network)","EndpointID":"\#(endpoint)","SandboxKey":"relative/netns"}"#
                let (_, message) = try client.refusal(
                    "/NetworkDriver.Join", try await client.post("/NetworkDriver.Join", raw: Array(body.utf8)))
                #expect(message.contains("SandboxKey") && !message.contains("unix socket"), "\(message)")
                try await client.ok("/NetworkDriver.Leave", Requests.endpoint(network, endpoint))
                try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint))
                try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
            }
        }

        @Test func concurrentRequestsAreServed() async throws {
            try await SupervisorFixture.with { supervisor in
                let client = supervisor.client
                let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                    for i in 0..<20 {
                        group.addTask {
                            try await client.post(
                                i % 2 == 0 ? "/NetworkDriver.GetCapabilities" : "/Plugin.Activate",
                                timeout: .seconds(30)
                            ).status
                        }
                    }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
                #expect(statuses.count == 20)
                #expect(statuses.allSatisfy { $0 == 200 }, "statuses: \(statuses)")

                // Networks created concurrently all come up and go away.
                let networks = (0..<4).map { _ in IDs.dockerID() }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (i, id) in networks.enumerated() {
                        group.addTask {
                            try await client.ok(
                                "/NetworkDriver.CreateNetwork",
                                Requests.createNetwork(id, pool: "10.201.\(i).0/24", gateway: "10.201.\(i).1/24"))
                        }
                    }
                    try await group.waitForAll()
                }
                for id in networks { #expect(supervisor.stateText().contains(id)) }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for id in networks {
                        group.addTask { try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(id)) }
                    }
                    try await group.waitForAll()
                }
                for id in networks { #expect(!supervisor.stateText().contains(id)) }
            }
        }
    }
}

/// A MAC dockerd can use: unicast, locally administered (the 0x02 bit of the first byte).
func expectLocallyAdministeredUnicast(_ mac: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let first = try #require(UInt8(mac.prefix(2), radix: 16), "MAC \(mac)", sourceLocation: sourceLocation)
    #expect(mac.split(separator: ":").count == 6, "MAC \(mac) should have 6 bytes", sourceLocation: sourceLocation)
    #expect(first & 0x02 != 0, "MAC \(mac) should be locally administered", sourceLocation: sourceLocation)
    #expect(first & 0x01 == 0, "MAC \(mac) should be unicast", sourceLocation: sourceLocation)
}
