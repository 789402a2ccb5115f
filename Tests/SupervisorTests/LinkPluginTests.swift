import Glibc
import Logging
import Shared
import Testing

@testable import vde_supervisor

/// Links through the real plugin actor and its real ``NetworkWorker``, against a stand-in
/// worker: a shell script that logs every command line it gets and answers start,
/// addEndpoint, setLink (`linkDown` when the link says down), removeEndpoint and shutdown.
/// No root needed: nothing touches the network.
@Suite(.serialized)
final class LinkPluginTests {
    let worker: StandInWorker
    let plugin: VDEPlugin
    static let networkA = "aa11" + String(repeating: "0", count: 60)
    static let networkB = "aa22" + String(repeating: "0", count: 60)
    static let endpoint1 = "e1" + String(repeating: "1", count: 62)
    static let endpoint2 = "e2" + String(repeating: "2", count: 62)

    init() throws {
        signal(SIGPIPE, SIG_IGN)
        worker = StandInWorker(name: "link")
        plugin = try worker.plugin(
            prelude: """
                state=plugged
                case "$line" in *'"down":true'*) state=linkDown ;; esac
                status="{\\"endpointID\\":\\"$ep\\",\\"tapName\\":\\"vdestandin\\",\\"macAddress\\":\\"02:00:00:00:00:01\\",\\"state\\":\\"$state\\"}"
                """,
            cases: """
                *'"command":{"addEndpoint"'*|*'"command":{"setLink"'*) reply="{\\"endpoint\\":{\\"status\\":$status}}" ;;
                *'"command":{"removeEndpoint"'*) reply='{"removed":{}}' ;;
                """)
    }

    deinit { worker.remove() }

    // MARK: helpers

    func createNetwork(_ id: String, options: [String: String] = [:]) async throws {
        try await plugin.createNetwork(id: id, options: options)
    }

    func createEndpoint(_ id: String, on network: String, options: [String: DockerAPI.OptionValue]? = nil)
        async throws
    {
        _ = try await plugin.createEndpoint(
            DockerAPI.CreateEndpointRequest(
                NetworkID: try NetworkID(network), EndpointID: try EndpointID(id), Options: options))
    }

    func record(_ endpoint: String, on network: String) async throws -> EndpointRecord? {
        await plugin.state.networks[try NetworkID(network)]?.endpoints[try EndpointID(endpoint)]
    }

    /// The command lines the stand-in got, of one kind.
    func commands(_ kind: String) -> [String] { worker.commands(kind) }

    func stateFile() -> [UInt8] {
        (try? FileSystem.read(worker.directory + "/state/state.json", limit: 1 << 20)) ?? []
    }

    func stop() async { await plugin.stopAllWorkers() }

    // MARK: CreateEndpoint

    @Test func theEndpointsLinkIsTheNetworkDefaultOverlaidWithItsDriverOptions() async throws {
        try await createNetwork(Self.networkA, options: ["link_delay": "20ms", "link_loss": "1%"])
        try await createEndpoint(
            Self.endpoint1, on: Self.networkA,
            options: [
                "link_delay": .string("50ms"), "com.docker.network.endpoint.exposedports": .other,
                "com.docker.network.portmap": .other,
            ])
        try await createEndpoint(Self.endpoint2, on: Self.networkA)
        await stop()
        let first = try #require(try await record(Self.endpoint1, on: Self.networkA)?.link)
        #expect(first == LinkSettings(impairment: LinkImpairment(delayMicroseconds: 50_000, lossMillipercent: 1000)))
        let second = try await record(Self.endpoint2, on: Self.networkA)?.link
        #expect(second == LinkSettings(impairment: LinkImpairment(delayMicroseconds: 20_000, lossMillipercent: 1000)))
        // The worker was handed it in the spec.
        let adds = commands("addEndpoint")
        #expect(adds.count == 2)
        #expect(adds.first?.contains("\"delayMicroseconds\":50000") == true, "\(adds)")
        let info = try await plugin.endpointOperInfo(
            DockerAPI.EndpointRequest(
                NetworkID: try NetworkID(Self.networkA), EndpointID: try EndpointID(Self.endpoint1)))
        #expect(info.Value["link"] == "delay=50ms loss=1%")
        // And it is in the state file.
        let reloaded = try JournaledStateStore.read(directory: worker.directory + "/state")
        #expect(
            reloaded?.networks[try NetworkID(Self.networkA)]?.endpoints[try EndpointID(Self.endpoint1)]?.link == first)
    }

    /// An endpoint's option is checked together with the network's default, not alone.
    @Test func driverOptionsCombineWithTheNetworkDefault() async throws {
        try await createNetwork(Self.networkA, options: ["link_delay": "20ms", "link_loss": "5%"])
        try await createEndpoint(
            Self.endpoint1, on: Self.networkA,
            options: ["link_jitter": .string("10ms"), "link_loss_burst": .string("3")])
        await stop()
        #expect(
            try await record(Self.endpoint1, on: Self.networkA)?.link?.impairment
                == LinkImpairment(
                    delayMicroseconds: 20_000, jitterMicroseconds: 10_000, lossMillipercent: 5000, lossBurst: 3))
    }

    @Test func aSocketDirWithAColonCannotBeShaped() async throws {
        await #expect {
            try await createNetwork(Self.networkA, options: ["socket_dir": "/run/vde:lab", "link_delay": "5ms"])
        } throws: { error in
            (error as? VDEError)?.message.contains("contains ':'") == true
        }
        try await createNetwork(Self.networkB, options: ["socket_dir": "/run/vde:lab"])
        await #expect {
            try await createEndpoint(Self.endpoint1, on: Self.networkB, options: ["link_delay": .string("5ms")])
        } throws: { error in
            (error as? VDEError)?.message.contains("contains ':'") == true
        }
        await stop()
        #expect(try await record(Self.endpoint1, on: Self.networkB) == nil)
        #expect(commands("addEndpoint").isEmpty)
    }

    @Test func anUnimpairedEndpointRecordsNoLink() async throws {
        try await createNetwork(Self.networkA)
        try await createEndpoint(
            Self.endpoint1, on: Self.networkA, options: ["com.docker.network.endpoint.exposedports": .other])
        await stop()
        #expect(try await record(Self.endpoint1, on: Self.networkA) != nil)
        #expect(try await record(Self.endpoint1, on: Self.networkA)?.link == nil)
        #expect(commands("addEndpoint").first?.contains("\"link\"") == false)
    }

    @Test(arguments: [
        (["link_delay": DockerAPI.OptionValue.string("-5ms")], "negative"),
        (["link_loss": .string("150%")], "above 100%"),
        (["link_delay": .string("5")], "a duration with a unit"),
        (["lnk_delay": .string("5ms")], "unknown endpoint option 'lnk_delay'"),
        (["link_jitter": .string("30ms")], "jitter 30ms is larger than the delay 20ms"),
        (["link_loss_burst": .string("3")], "loss_burst needs a loss"),
        (["link_delay": .bool(true)], "link_delay"),
    ])
    func badDriverOptionsAreRefusedWithNothingMade(options: [String: DockerAPI.OptionValue], words: String)
        async throws
    {
        try await createNetwork(Self.networkA, options: ["link_delay": "20ms"])
        let before = stateFile()
        do {
            try await createEndpoint(Self.endpoint1, on: Self.networkA, options: options)
            Issue.record("accepted \(options)")
        } catch {
            let message = VDEError(wrapping: error).message
            #expect(message.contains(words), "\(message)")
            #expect(VDEError(wrapping: error).code == .invalidArgument)
        }
        await stop()
        #expect(try await record(Self.endpoint1, on: Self.networkA) == nil)
        #expect(commands("addEndpoint").isEmpty, "no tap may be made")
        #expect(stateFile() == before)
    }

    // MARK: the control request

    func link(
        _ network: String, _ endpoint: String? = nil, _ action: LinkRequest.Action, settings: [String: String]? = nil,
        keys: [String]? = nil
    ) async throws -> LinkReply {
        try await plugin.link(
            LinkRequest(network: network, endpoint: endpoint, action: action, settings: settings, keys: keys))
    }

    @Test func setOnOneEndpointIsRecordedThenSentToTheWorker() async throws {
        try await createNetwork(Self.networkA)
        try await createEndpoint(Self.endpoint1, on: Self.networkA)
        try await createEndpoint(Self.endpoint2, on: Self.networkA)
        let reply = try await link("aa11", "e1", .set, settings: ["delay": "50ms", "loss": "2%"])
        #expect(reply.changed)
        #expect(reply.network == Self.networkA)
        #expect(reply.endpoints.map(\.id) == [Self.endpoint1])
        #expect(reply.endpoints.first?.link.summary == "delay=50ms loss=2%")
        #expect(reply.endpoints.first?.state == "plugged")
        #expect(reply.endpoints.first?.note == nil)
        #expect(reply.networkDefault == nil, "a change of one endpoint leaves the default")
        let expected = LinkSettings(impairment: LinkImpairment(delayMicroseconds: 50_000, lossMillipercent: 2000))
        #expect(try await record(Self.endpoint1, on: Self.networkA)?.link == expected)
        #expect(try await record(Self.endpoint2, on: Self.networkA)?.link == nil)
        let reloaded = try JournaledStateStore.read(directory: worker.directory + "/state")
        #expect(
            reloaded?.networks[try NetworkID(Self.networkA)]?.endpoints[try EndpointID(Self.endpoint1)]?.link
                == expected)
        let sent = commands("setLink")
        #expect(sent.count == 1)
        #expect(sent.first?.contains(Self.endpoint1) == true)
        #expect(sent.first?.contains("\"delayMicroseconds\":50000") == true, "\(sent)")

        // down keeps the impairment; the worker's answer (linkDown) is in the reply.
        let down = try await link(Self.networkA, Self.endpoint1, .down)
        #expect(down.endpoints.first?.state == "linkDown")
        #expect(down.endpoints.first?.link.down == true)
        #expect(try await record(Self.endpoint1, on: Self.networkA)?.link?.impairment == expected.impairment)
        // clear one key, then up and clear all: back to no record at all.
        _ = try await link(Self.networkA, "e1", .clear, keys: ["loss"])
        #expect(
            try await record(Self.endpoint1, on: Self.networkA)?.link?.impairment
                == LinkImpairment(delayMicroseconds: 50_000))
        _ = try await link(Self.networkA, "e1", .up)
        let cleared = try await link(Self.networkA, "e1", .clear)
        #expect(cleared.endpoints.first?.link == LinkInfo(LinkSettings()))
        #expect(try await record(Self.endpoint1, on: Self.networkA)?.link == nil)
        #expect(commands("setLink").count == 5)
        await stop()
    }

    @Test func setWithoutAnEndpointChangesEveryEndpointAndTheDefault() async throws {
        try await createNetwork(Self.networkA, options: ["link_loss": "1%"])
        try await createEndpoint(Self.endpoint1, on: Self.networkA, options: ["link_rate": .string("10mbit")])
        let reply = try await link(Self.networkA, nil, .set, settings: ["delay": "25ms"])
        #expect(reply.endpoints.map(\.id) == [Self.endpoint1])
        #expect(reply.networkDefault?.summary == "delay=25ms loss=1%")
        // The endpoint keeps its own rate.
        #expect(
            try await record(Self.endpoint1, on: Self.networkA)?.link?.impairment
                == LinkImpairment(delayMicroseconds: 25_000, lossMillipercent: 1000, rateBitsPerSecond: 10_000_000))
        let options = await plugin.state.networks[try NetworkID(Self.networkA)]?.options
        #expect(options?.link == LinkImpairment(delayMicroseconds: 25_000, lossMillipercent: 1000))
        // A later endpoint gets the new default.
        try await createEndpoint(Self.endpoint2, on: Self.networkA)
        #expect(
            try await record(Self.endpoint2, on: Self.networkA)?.link?.impairment
                == LinkImpairment(delayMicroseconds: 25_000, lossMillipercent: 1000))
        // down without an endpoint: every current endpoint, not the default.
        let down = try await link(Self.networkA, nil, .down)
        #expect(down.endpoints.count == 2)
        #expect(down.endpoints.allSatisfy { $0.link.down && $0.state == "linkDown" })
        #expect(await plugin.state.networks[try NetworkID(Self.networkA)]?.options.link == options?.link)
        // clear without an endpoint clears the default too.
        _ = try await link(Self.networkA, nil, .clear)
        #expect(await plugin.state.networks[try NetworkID(Self.networkA)]?.options.link == nil)
        #expect(try await record(Self.endpoint2, on: Self.networkA)?.link == LinkSettings(down: true))
        await stop()
    }

    @Test func showChangesNothingAndSendsNothing() async throws {
        try await createNetwork(Self.networkA, options: ["link_delay": "5ms"])
        try await createEndpoint(Self.endpoint1, on: Self.networkA)
        let before = stateFile()
        let reply = try await link(Self.networkA, nil, .show)
        #expect(!reply.changed)
        #expect(reply.networkDefault?.summary == "delay=5ms")
        #expect(reply.endpoints.first?.link.summary == "delay=5ms")
        #expect(commands("setLink").isEmpty)
        #expect(stateFile() == before)
        await stop()
    }

    /// Every refusal leaves the record, the state file and the worker as they were.
    @Test func badRequestsChangeNothing() async throws {
        try await createNetwork(Self.networkA)
        try await createNetwork(Self.networkB)
        try await createEndpoint(Self.endpoint1, on: Self.networkA)
        try await createEndpoint(Self.endpoint2, on: Self.networkA)
        _ = try await link(Self.networkA, "e1", .set, settings: ["delay": "10ms"])
        let before = stateFile()
        let sentBefore = commands("setLink").count
        let cases: [(LinkRequest, VDEError.Code, String)] = [
            (LinkRequest(network: "ffff", action: .show), .notFound, "no vde network"),
            (LinkRequest(network: "aa", action: .down), .invalidArgument, "starts the IDs of 2 vde networks"),
            (LinkRequest(network: "", action: .down), .notFound, "no vde network"),
            (LinkRequest(network: "aa11", endpoint: "e3", action: .down), .notFound, "has no endpoint"),
            (
                LinkRequest(network: "aa11", endpoint: "e", action: .down), .invalidArgument,
                "starts the IDs of 2 endpoints"
            ),
            (LinkRequest(network: "aa11", action: .set, settings: ["loss": "150%"]), .invalidArgument, "above 100%"),
            (LinkRequest(network: "aa11", action: .set, settings: ["delay": "-1ms"]), .invalidArgument, "negative"),
            (LinkRequest(network: "aa11", action: .set, settings: ["delay": "1parsec"]), .invalidArgument, "duration"),
            (
                LinkRequest(network: "aa11", action: .set, settings: ["latency": "1ms"]), .invalidArgument,
                "unknown link key"
            ),
            (LinkRequest(network: "aa11", action: .set, settings: [:]), .invalidArgument, "at least one"),
            (LinkRequest(network: "aa11", action: .clear, keys: ["latency"]), .invalidArgument, "unknown link key"),
            (LinkRequest(network: "aa11", action: .down, keys: ["delay"]), .invalidArgument, "takes no keys"),
            // e1 has delay=10ms: a 20ms jitter is refused for it, so for the whole network.
            (LinkRequest(network: "aa11", action: .set, settings: ["jitter": "20ms"]), .invalidArgument, "jitter"),
            // Clearing e1's delay would leave no jitter problem, but a burst without loss is one.
            (
                LinkRequest(network: "aa11", endpoint: "e1", action: .set, settings: ["loss_burst": "3"]),
                .invalidArgument, "loss_burst needs a loss"
            ),
        ]
        for (request, code, words) in cases {
            do {
                let reply = try await plugin.link(request)
                Issue.record("accepted \(request): \(reply)")
            } catch {
                let error = VDEError(wrapping: error)
                #expect(error.code == code, "\(request): \(error.message)")
                #expect(error.message.contains(words), "\(request): \(error.message)")
            }
        }
        #expect(stateFile() == before)
        #expect(commands("setLink").count == sentBefore)
        #expect(
            try await record(Self.endpoint1, on: Self.networkA)?.link?.impairment
                == LinkImpairment(delayMicroseconds: 10_000))
        #expect(await plugin.state.networks[try NetworkID(Self.networkA)]?.options.link == nil)
        await stop()
    }

    /// Through the control API: JSON in, JSON out, errors as `{"Err"}` with the status of their kind.
    @Test func theControlAPIServesLinkRequests() async throws {
        try await createNetwork(Self.networkA)
        try await createEndpoint(Self.endpoint1, on: Self.networkA)
        let api = ControlAPI(plugin: plugin)
        let ok = await api.reply(
            method: "POST", path: "/v1/link",
            body: Array(#"{"network":"aa11","endpoint":"e1","action":"set","settings":{"delay":"50ms"}}"#.utf8))
        #expect(ok.status == 200)
        let reply = try JSONCoding.decode(LinkReply.self, from: ok.body)
        #expect(reply.endpoints.first?.link.settings == ["delay": "50ms"])
        let bad = await api.reply(
            method: "POST", path: "/v1/link",
            body: Array(#"{"network":"aa11","action":"set","settings":{"loss":"101%"}}"#.utf8))
        #expect(bad.status == 400)
        #expect(String(decoding: bad.body, as: UTF8.self).contains("above 100%"))
        let unknown = await api.reply(
            method: "POST", path: "/v1/link", body: Array(#"{"network":"bb","action":"show"}"#.utf8))
        #expect(unknown.status == 404)
        let malformed = await api.reply(
            method: "POST", path: "/v1/link", body: Array(#"{"network":"aa11","action":"shake"}"#.utf8))
        #expect(malformed.status == 400)
        #expect(await api.reply(method: "GET", path: "/v1/link").status == 405)
        // status carries the link.
        let status = await api.reply(method: "GET", path: "/v1/status")
        let report = try JSONCoding.decode(StatusReport.self, from: status.body)
        #expect(report.networks.first?.endpoints.first?.link?.summary == "delay=50ms")
        await stop()
    }

    /// A worker started with an assignment read before a `link` change was recorded gets the
    /// recorded link right after its start: which endpoints need it.
    @Test func aStartHandedAnOlderLinkIsFoundStale() throws {
        let network = try NetworkID(Self.networkA)
        let delay = LinkSettings(impairment: LinkImpairment(delayMicroseconds: 30_000))
        func endpoint(_ id: String, _ link: LinkSettings?) throws -> EndpointRecord {
            EndpointRecord(
                id: try EndpointID(id), networkID: network, tapName: TapName(endpoint: try EndpointID(id)),
                macAddress: "02:00:00:00:00:01", macGenerated: true, link: link)
        }
        let spec = try SwitchSpec(
            paths: NetworkPaths(runDir: "/run/x", network: network, options: NetworkOptions()), mode: .own, group: nil,
            numPorts: 4)
        var record = NetworkRecord(
            id: network, options: NetworkOptions(), switchSpec: spec, switchStarted: true, ipv4Data: [], ipv6Data: [],
            poolIDs: [], createdAt: 0)
        let handed = [try endpoint(Self.endpoint1, nil).spec, try endpoint(Self.endpoint2, delay).spec]
        record.endpoints = [
            try EndpointID(Self.endpoint1): try endpoint(Self.endpoint1, delay),
            try EndpointID(Self.endpoint2): try endpoint(Self.endpoint2, delay),
        ]
        #expect(VDEPlugin.staleLinks(handed: handed, record: record, gone: []) == [try EndpointID(Self.endpoint1)])
        #expect(VDEPlugin.staleLinks(handed: handed, record: record, gone: [try EndpointID(Self.endpoint1)]).isEmpty)
    }

    /// A network with no worker (stopped): the change is recorded and the reply says the next start applies it.
    @Test func aChangeWithoutAWorkerIsRecordedAndSaysSo() async throws {
        try await createNetwork(Self.networkA)
        try await createEndpoint(Self.endpoint1, on: Self.networkA)
        await stop()
        let reply = try await link(Self.networkA, nil, .down)
        #expect(reply.endpoints.first?.note?.contains("next start applies it") == true, "\(reply)")
        #expect(reply.endpoints.first?.failed == nil)
        #expect(try await record(Self.endpoint1, on: Self.networkA)?.link == LinkSettings(down: true))
    }
}
