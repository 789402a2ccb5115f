import Shared
import Testing

@Suite struct WorkerProtocolTests {
    private static let spec: SwitchSpec = {
        do {
            return try SwitchSpec(
                paths: NetworkPaths(
                    networkDir: "/run/vde-supervisor/abc", ctlDir: "/run/vde/net", managementSocket: "/run/vde/net.mgmt"
                ),
                mode: .useOrCreate, group: "vde", numPorts: 32)
        } catch {
            preconditionFailure("the test spec breaks a rule: \(error)")
        }
    }()
    private static let endpoint = EndpointSpec(
        endpointID: "abc123", tapName: "vdeabc123", macAddress: "02:00:00:00:00:01",
        sandboxKey: "/var/run/docker/netns/1")
    private static let switchStatus = SwitchStatus(
        ctlDir: "/run/vde/net", managementSocket: nil, owned: true, pid: 42, numPorts: 32)
    private static let endpointStatus = EndpointStatus(
        endpointID: "abc123", tapName: "vdeabc123", macAddress: "02:00:00:00:00:01", state: .plugged, plugPID: 43,
        port: 2,
        counters: PortCounters(port: 2, inPackets: 1, inBytes: 60, outPackets: 2, outBytes: 120))

    static let commands: [WorkerCommand] = [
        .start(switch: spec, restore: [endpoint]),
        .start(switch: spec),
        .addEndpoint(endpoint: endpoint),
        .joinEndpoint(endpointID: "abc123", sandboxKey: "/var/run/docker/netns/1"),
        .leaveEndpoint(endpointID: "abc123"),
        .removeEndpoint(endpointID: "abc123"),
        .setLink(
            endpointID: "abc123",
            link: LinkSettings(
                impairment: LinkImpairment(delayMicroseconds: 50000, lossMillipercent: 20000), down: true)),
        .startCapture(
            capture: (try? CaptureSpec(id: "0123456789ab", endpointID: "abc123", filter: "icmp"))
                ?? CaptureSpec(id: "0123456789ab")),
        .startCapture(capture: CaptureSpec(id: "0123456789ab")),
        .status, .ping, .shutdown,
    ]

    @Test(arguments: commands)
    func requestRoundTrip(command: WorkerCommand) throws {
        let request = WorkerRequest(id: UInt64.max, command)
        let text = try JSONCoding.string(request)
        #expect(!text.contains("\n"), "one request must be one line")
        #expect(try JSONCoding.decode(WorkerRequest.self, from: Array(text.utf8)) == request)
        // The command's JSON key is its kind's name, which the worker uses to name an unknown command.
        #expect(text.contains(#""command":{"\#(command.kind.rawValue)":"#), "\(text)")
    }

    @Test func startCarriesThePathsAsOneLine() throws {
        let text = try JSONCoding.string(WorkerRequest(id: 1, .start(switch: Self.spec, restore: [Self.endpoint])))
        #expect(!text.contains("\n"))
        #expect(text.contains(#""ctlDir":"/run/vde/net""#))
        #expect(text.contains(#""networkDir":"/run/vde-supervisor/abc""#))
    }

    /// IDs and sandbox keys in commands are checked by the decode, like every other identity.
    @Test func commandWithBadIdentityDoesNotDecode() {
        let badID = #"{"command":{"leaveEndpoint":{"endpointID":"../x"}},"id":1,"v":4}"#
        #expect(throws: (any Error).self) { try JSONCoding.decode(WorkerRequest.self, from: Array(badID.utf8)) }
        let badKey = #"{"command":{"joinEndpoint":{"endpointID":"e1","sandboxKey":"relative/ns"}},"id":1,"v":4}"#
        #expect(throws: (any Error).self) { try JSONCoding.decode(WorkerRequest.self, from: Array(badKey.utf8)) }
    }

    /// The exact lines, as docs/worker-protocol.md shows them.
    @Test func goldenRequestLines() throws {
        #expect(try JSONCoding.string(WorkerRequest(id: 7, .status)) == #"{"command":{"status":{}},"id":7,"v":4}"#)
        #expect(
            try JSONCoding.string(
                WorkerRequest(id: 3, .joinEndpoint(endpointID: "e1", sandboxKey: "/var/run/docker/netns/x")))
                == #"{"command":{"joinEndpoint":{"endpointID":"e1","sandboxKey":"/var/run/docker/netns/x"}},"id":3,"v":4}"#
        )
        #expect(
            try JSONCoding.string(WorkerRequest(id: 4, .removeEndpoint(endpointID: "e1")))
                == #"{"command":{"removeEndpoint":{"endpointID":"e1"}},"id":4,"v":4}"#)
    }

    static let messages: [WorkerMessage] = [
        .reply(id: 1, .started(switch: switchStatus, endpoints: [endpointStatus])),
        .reply(id: 2, .endpoint(status: endpointStatus)),
        .reply(id: 3, .removed),
        .reply(
            id: 4,
            .status(
                report: WorkerStatus(
                    switch: switchStatus, endpoints: [endpointStatus], otherPorts: [PortCounters(port: 5, peer: "QEMU")]
                ))),
        .reply(id: 5, .status(report: WorkerStatus())),
        .reply(id: 6, .pong),
        .reply(id: 7, .stopped(switch: nil)),
        .failure(id: 8, .system("vde_switch exited")),
        .event(.hello(pid: 99, detail: "vde-networker for network abc")),
        .event(.childExited(child: .plug, pid: 43, endpointID: "abc123", detail: "exited with status 1")),
        .event(.childExited(child: .switch, pid: 42, detail: "killed by signal 9")),
        .event(.childRestarted(child: .switch, pid: 44, detail: "re-attached 1 of 1 endpoints")),
        .event(.tapGone(endpointID: "abc123", pid: 43, detail: "the tap is gone")),
        .event(.endpointState(endpointID: "abc123", state: .plugged, pid: 45)),
        .event(.endpointState(endpointID: "abc123", state: .tapGone, detail: "no longer exists")),
    ]

    @Test(arguments: messages)
    func messageRoundTrip(message: WorkerMessage) throws {
        let text = try JSONCoding.string(message)
        #expect(!text.contains("\n"))
        #expect(!text.contains("null"), "unset fields are left out: \(text)")
        #expect(try JSONCoding.decode(WorkerMessage.self, from: Array(text.utf8)) == message)
    }

    @Test func goldenMessageLines() throws {
        #expect(try JSONCoding.string(WorkerMessage.reply(id: 6, .pong)) == #"{"id":6,"reply":{"pong":{}},"v":4}"#)
        #expect(
            try JSONCoding.string(WorkerMessage.failure(id: 2, .system("boom")))
                == #"{"error":{"code":"system","message":"boom"},"id":2,"v":4}"#)
        #expect(
            try JSONCoding.string(
                WorkerMessage.event(.childExited(child: .switch, pid: 42, detail: "killed by signal 9")))
                == #"{"event":{"childExited":{"child":"switch","detail":"killed by signal 9","pid":42}},"v":4}"#)
    }

    @Test func eventAccessorsNameTheSharedFields() {
        let exited = WorkerEvent.childExited(child: .plug, pid: 43, endpointID: "e1", detail: "status 1")
        #expect(exited.kind == .childExited && exited.child == .plug && exited.pid == 43 && exited.endpointID == "e1")
        #expect(exited.detail == "status 1" && exited.state == nil)
        let state = WorkerEvent.endpointState(endpointID: "e2", state: .unreachable, detail: "nsenter failed")
        #expect(state.kind == .endpointState && state.state == .unreachable && state.pid == nil && state.child == nil)
        #expect(WorkerEvent.hello(pid: 1, detail: "x").endpointID == nil)
    }

    @Test(arguments: [
        #"{"v":4,"id":1,"command":{"explode":{}}}"#,
        #"{"v":4,"id":1}"#,
        #"{"v":4,"id":1,"command":{}}"#,
        #"{"v":4,"id":1,"command":{"ping":{},"status":{}}}"#,
        #"{"v":4,"id":1,"command":{"addEndpoint":{}}}"#,
        #"{"v":4,"id":1,"command":{"joinEndpoint":{"endpointID":"e1"}}}"#,
        #"{"v":4,"id":-1,"command":{"ping":{}}}"#,
        #"{"v":4,"id":"1","command":{"ping":{}}}"#,
        #"{"id":1,"command":{"ping":{}}}"#,
        #"{"v":1,"id":1,"op":"ping"}"#,
        #"not json"#,
        "",
    ])
    func badRequestsFailCleanly(text: String) {
        #expect(throws: (any Error).self) { _ = try JSONCoding.decode(WorkerRequest.self, from: Array(text.utf8)) }
    }

    @Test(arguments: [
        #"{"v":4,"event":{"party":{}}}"#,
        #"{"v":4,"id":1,"error":{"code":"nope","message":"x"}}"#,
        #"{"v":4}"#,
        #"{"v":4,"reply":{"pong":{}}}"#,
        #"{"v":4,"id":1,"reply":{"pong":{}},"event":{"hello":{"pid":1,"detail":"x"}}}"#,
        #"{"v":1,"id":1,"ok":true,"result":{}}"#,
        #"{"v":4,"event":{"childExited":{"child":"cat","pid":1,"detail":"x"}}}"#,
    ])
    func badMessagesFailCleanly(text: String) {
        #expect(throws: (any Error).self) { _ = try JSONCoding.decode(WorkerMessage.self, from: Array(text.utf8)) }
    }

    @Test func anotherVersionIsNamedInTheError() {
        do {
            _ = try JSONCoding.decode(WorkerMessage.self, from: Array(#"{"v":2,"id":1,"reply":{"pong":{}}}"#.utf8))
            Issue.record("accepted a message of version 2")
        } catch {
            let text = JSONCoding.describe(error)
            #expect(text.contains("version 4") && text.contains("version 2"), "\(text)")
        }
    }

    @Test func unknownFieldsAreIgnored() throws {
        let request = try JSONCoding.decode(
            WorkerRequest.self, from: Array(#"{"v":4,"id":5,"command":{"ping":{}},"future":true}"#.utf8))
        #expect(request == WorkerRequest(id: 5, .ping))
    }

    @Test func onlyPingAndStatusAreQueries() {
        #expect(Self.commands.filter(\.isQuery).map(\.kind) == [.status, .ping])
        #expect(Set(Self.commands.map(\.kind)) == Set(WorkerCommand.Kind.allCases))
    }
}
