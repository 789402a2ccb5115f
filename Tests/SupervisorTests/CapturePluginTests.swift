import Glibc
import Logging
import Shared
import Testing

@testable import vde_supervisor

/// `POST /v1/capture`, captures in `status`, and `-o hub=true` through the real plugin actor
/// and its real ``NetworkWorker``, against a stand-in worker (a shell script) that logs every
/// command line and answers startCapture with a socket path and status with one capture.
/// No root needed: nothing touches the network.
@Suite(.serialized)
final class CapturePluginTests {
    let worker: StandInWorker
    let plugin: VDEPlugin
    static let network = "ca11" + String(repeating: "0", count: 60)
    static let endpoint = "e1" + String(repeating: "1", count: 62)

    init() throws {
        signal(SIGPIPE, SIG_IGN)
        worker = StandInWorker(name: "capture")
        let capture =
            #"{\"id\":\"0123456789ab\",\"filter\":\"icmp\",\"startedAt\":1796180645000,\"clientPID\":77,\"frames\":5,\"dropped\":1}"#
        plugin = try worker.plugin(
            prelude: """
                cid=$(printf '%s' "$line" | sed -n 's/.*"capture":{[^}]*"id":"\\([0-9a-f]*\\)".*/\\1/p')
                status="{\\"endpointID\\":\\"$ep\\",\\"tapName\\":\\"vdestandin\\",\\"macAddress\\":\\"02:00:00:00:00:01\\",\\"state\\":\\"plugged\\"}"
                """,
            cases: """
                *'"command":{"addEndpoint"'*) reply="{\\"endpoint\\":{\\"status\\":$status}}" ;;
                *'"command":{"startCapture"'*) reply="{\\"captureStarted\\":{\\"socket\\":\\"/x/captures/$cid.sock\\"}}" ;;
                *'"command":{"status"'*) reply="{\\"status\\":{\\"report\\":{\\"endpoints\\":[],\\"captures\\":[\(capture)]}}}" ;;
                """)
    }

    deinit { worker.remove() }

    func setUp(options: [String: String] = [:]) async throws {
        _ = try await plugin.createNetwork(
            DockerAPI.CreateNetworkRequest(
                NetworkID: try NetworkID(Self.network), Options: [DockerAPI.genericOptionsKey: .map(options)]))
        _ = try await plugin.createEndpoint(
            DockerAPI.CreateEndpointRequest(
                NetworkID: try NetworkID(Self.network), EndpointID: try EndpointID(Self.endpoint)))
    }

    func commands(_ kind: String) -> [String] { worker.commands(kind) }

    func post(_ body: String, path: String = "/v1/capture", method: String = "POST") async -> PluginReply {
        await ControlAPI(plugin: plugin).reply(method: method, path: path, body: Array(body.utf8))
    }

    @Test func aSegmentCaptureGetsAFreshIDAndTheWorkersSocket() async throws {
        try await setUp()
        let reply = await post(#"{"network":"ca11","filter":"icmp"}"#)
        #expect(reply.status == 200)
        let answer = try JSONCoding.decode(CaptureReply.self, from: reply.body)
        #expect(answer.network == Self.network)
        #expect(answer.endpoint == nil)
        #expect(answer.socket == "/x/captures/\(answer.id).sock")
        let sent = commands("startCapture")
        #expect(sent.count == 1)
        #expect(sent.first?.contains(#""id":"\#(answer.id)""#) == true)
        #expect(sent.first?.contains(#""filter":"icmp""#) == true)
        #expect(sent.first?.contains("endpointID") == false)
        await plugin.stopAllWorkers()
    }

    @Test func anEndpointCaptureResolvesTheEndpointPrefix() async throws {
        try await setUp()
        let reply = await post(#"{"network":"ca11","endpoint":"e1"}"#)
        #expect(reply.status == 200)
        let answer = try JSONCoding.decode(CaptureReply.self, from: reply.body)
        #expect(answer.endpoint == Self.endpoint)
        #expect(commands("startCapture").first?.contains(#""endpointID":"\#(Self.endpoint)""#) == true)
        await plugin.stopAllWorkers()
    }

    @Test func badRequestsAreRefusedWithTheirStatusAndNeverReachTheWorker() async throws {
        try await setUp()
        let malformed = await post(#"{"network":42}"#)
        #expect(malformed.status == 400)
        #expect(String(decoding: malformed.body, as: UTF8.self).contains("malformed capture request"))
        #expect(await post(#"{"network":"ffff"}"#).status == 404)
        let noEndpoint = await post(#"{"network":"ca11","endpoint":"e9"}"#)
        #expect(noEndpoint.status == 404)
        #expect(String(decoding: noEndpoint.body, as: UTF8.self).contains("no endpoint with an ID starting with 'e9'"))
        let controlCharacter = await post(#"{"network":"ca11","filter":"icmp\u0007"}"#)
        #expect(controlCharacter.status == 400)
        #expect(String(decoding: controlCharacter.body, as: UTF8.self).contains("printable text"))
        #expect(await post(#"{"network":""}"#).status == 404)
        #expect(await post("", method: "GET").status == 405)
        #expect(commands("startCapture").isEmpty)
        await plugin.stopAllWorkers()
    }

    @Test func statusShowsTheWorkersCapturesAsJSONAndAsATableLine() async throws {
        try await setUp()
        let reply = await post("", path: "/v1/status", method: "GET")
        let report = try JSONCoding.decode(StatusReport.self, from: reply.body)
        let captures = try #require(report.networks.first?.captures)
        #expect(captures.count == 1)
        #expect(captures.first?.target == "segment")
        #expect(captures.first?.clientPID == 77)
        let lines = StatusTable(report: report, color: false, detailed: false).render().split(separator: "\n")
        let header = try #require(lines.first { $0.contains("CAPTURE") })
        #expect(
            header.split(separator: " ", omittingEmptySubsequences: true) == [
                "CAPTURE", "TARGET", "FILTER", "PID", "SINCE", "FRAMES", "DROPPED",
            ])
        let row = try #require(lines.first { $0.contains("0123456789ab") })
        #expect(row.hasPrefix("  0123456789ab  segment  icmp"))
        #expect(row.contains("2026-12-02 03:04:05 UTC"))
        #expect(row.hasSuffix("5       1"))
        await plugin.stopAllWorkers()
    }

    @Test func anEndpointCaptureRowNamesTheContainerOrElseTheShortEndpointID() throws {
        var status = CaptureStatus(
            id: try CaptureID("abcdefabcdef"), endpointID: try EndpointID(Self.endpoint), startedAt: 0)
        status.frames = 3
        var info = CaptureInfo(status)
        #expect(StatusTable.captureRows([info])[1].prefix(3) == ["abcdefabcdef", "e11111111111", "-"])
        info.container = "/web"
        #expect(StatusTable.captureRows([info])[1][1] == "web")
    }

    @Test func hubFlowsFromTheOptionsIntoTheSwitchSpecTheWorkerAndTheStateFile() async throws {
        try await setUp(options: ["hub": "true", "com.docker.network.driver.mtu": "1400"])
        let record = try #require(await plugin.state.networks[try NetworkID(Self.network)])
        #expect(record.switchSpec.hub)
        #expect(commands("start").first?.contains(#""hub":true"#) == true)
        await plugin.stopAllWorkers()
        // Read back as the next supervisor start reads it: hub and the MTU survive.
        let state = try #require(
            try JournaledStateStore.read(
                directory: worker.directory + "/state", userInfo: [NetworkRecord.runDirKey: worker.directory + "/run"]))
        #expect(state.networks[try NetworkID(Self.network)]?.switchSpec.hub == true)
        #expect(state.networks[try NetworkID(Self.network)]?.switchSpec.mtu == 1400)
    }
}
