import Shared
import Testing

@Suite struct WorkerProtocolTests {
    private var spec: SwitchSpec {
        get throws {
            try SwitchSpec(paths: NetworkPaths(networkDir: "/run/vde-supervisor/abc", ctlDir: "/run/vde/net", managementSocket: "/run/vde/net.mgmt"),
                           mode: .useOrCreate, group: "vde", numPorts: 32)
        }
    }
    private let endpoint = EndpointSpec(endpointID: "abc123", tapName: "vdeabc123", macAddress: "02:00:00:00:00:01",
                                        sandboxKey: "/var/run/docker/netns/1")

    @Test func requestRoundTrip() throws {
        let requests = [
            WorkerRequest(id: 1, op: .start, switch: try spec, endpoints: [endpoint]),
            WorkerRequest(id: 2, op: .addEndpoint, endpoint: endpoint),
            WorkerRequest(id: 3, op: .joinEndpoint, endpointID: "abc123", sandboxKey: "/var/run/docker/netns/1"),
            WorkerRequest(id: UInt64.max, op: .ping),
        ]
        for request in requests {
            let decoded = try JSONCoding.decode(WorkerRequest.self, from: try JSONCoding.encode(request))
            #expect(decoded == request)
        }
    }

    @Test func encodedRequestHasVersionIdAndOp() throws {
        let text = try JSONCoding.string(WorkerRequest(id: 7, op: .status))
        #expect(text.hasPrefix("{"))
        #expect(text.contains(#""v":1"#))
        #expect(text.contains(#""id":7"#))
        #expect(text.contains(#""op":"status""#))
        #expect(!text.contains("\n"), "one request must be one line")
        #expect(WorkerRequest(id: 7, op: .status).v == WorkerProtocol.version)
    }

    @Test func encodedRequestWithPathsIsOneLine() throws {
        let text = try JSONCoding.string(WorkerRequest(id: 1, op: .start, switch: try spec, endpoints: [endpoint]))
        #expect(!text.contains("\n"))
        #expect(text.contains(#""ctlDir":"/run/vde/net""#))
    }

    @Test func messageRoundTrip() throws {
        let status = SwitchStatus(ctlDir: "/run/vde/net", managementSocket: nil, owned: true, pid: 42, numPorts: 32)
        let endpointStatus = EndpointStatus(endpointID: "abc123", tapName: "vdeabc123", macAddress: "02:00:00:00:00:01",
                                            state: .plugged, plugPID: 43, port: 2,
                                            counters: PortCounters(port: 2, inPackets: 1, inBytes: 60, outPackets: 2, outBytes: 120))
        let messages = [
            WorkerMessage.reply(to: 1, result: WorkerResult(switch: status, endpoints: [endpointStatus],
                                                            otherPorts: [PortCounters(port: 5, peer: "QEMU")])),
            WorkerMessage.failure(of: 2, .system("vde_switch exited")),
            WorkerMessage(event: .hello, pid: 99),
            WorkerMessage(event: .childExited, child: "plug", endpointID: "abc123", detail: "status 1"),
        ]
        for message in messages {
            let decoded = try JSONCoding.decode(WorkerMessage.self, from: try JSONCoding.encode(message))
            #expect(decoded == message)
        }
        let failure = try JSONCoding.string(WorkerMessage.failure(of: 2, .system("boom")))
        #expect(failure.contains(#""ok":false"#))
        #expect(failure.contains(#""code":"system""#))
    }

    @Test(arguments: [
        #"{"v":1,"id":1,"op":"explode"}"#,
        #"{"v":1,"id":1}"#,
        #"{"v":1,"id":-1,"op":"ping"}"#,
        #"{"v":1,"id":"1","op":"ping"}"#,
        #"{"id":1,"op":"ping"}"#,
        #"not json"#,
        "",
    ])
    func badRequestsFailCleanly(text: String) {
        #expect(throws: (any Error).self) { _ = try JSONCoding.decode(WorkerRequest.self, from: Array(text.utf8)) }
    }

    @Test func unknownEventOrErrorCodeFailsCleanly() {
        #expect(throws: (any Error).self) {
            _ = try JSONCoding.decode(WorkerMessage.self, from: Array(#"{"v":1,"event":"party"}"#.utf8))
        }
        #expect(throws: (any Error).self) {
            _ = try JSONCoding.decode(WorkerMessage.self, from: Array(#"{"v":1,"id":1,"ok":false,"error":{"code":"nope","message":"x"}}"#.utf8))
        }
    }

    @Test func unknownFieldsAreIgnored() throws {
        let request = try JSONCoding.decode(WorkerRequest.self, from: Array(#"{"v":1,"id":5,"op":"ping","future":true}"#.utf8))
        #expect(request == WorkerRequest(id: 5, op: .ping))
    }
}
