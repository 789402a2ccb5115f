import Shared
import Testing

/// The worker's decoding of its stdin lines (``IncomingLine``).
@Suite struct IncomingLineTests {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func validRequest() throws {
        let line = bytes(
            #"{"v":4,"id":7,"command":{"joinEndpoint":{"endpointID":"abc","sandboxKey":"/var/run/docker/netns/x"}}}"#)
        guard case .request(let request) = IncomingLine.decode(line) else {
            Issue.record("not decoded as a request")
            return
        }
        #expect(request.id == 7)
        #expect(request.command == .joinEndpoint(endpointID: "abc", sandboxKey: "/var/run/docker/netns/x"))
    }

    @Test func requestRoundTripsThroughSharedCoding() throws {
        let request = WorkerRequest(
            id: 3,
            .addEndpoint(endpoint: EndpointSpec(endpointID: "e1", tapName: "vdee1", macAddress: "02:00:00:00:00:01")))
        #expect(IncomingLine.decode(try JSONCoding.encode(request)) == .request(request))
    }

    @Test func unknownCommandIsAnsweredWithItsID() {
        #expect(
            IncomingLine.decode(bytes(#"{"v":4,"id":9,"command":{"explode":{}}}"#))
                == .invalid(id: 9, reason: "unknown command 'explode'"))
    }

    @Test func missingFieldOfACommandIsNamedAndAnswered() {
        guard
            case .invalid(let id, let reason) = IncomingLine.decode(
                bytes(#"{"v":4,"id":5,"command":{"addEndpoint":{}}}"#))
        else {
            Issue.record("accepted")
            return
        }
        #expect(id == 5)
        #expect(reason.contains("'endpoint'"), "\(reason)")
    }

    @Test func otherProtocolVersionIsRefused() {
        guard case .invalid(let id, let reason) = IncomingLine.decode(bytes(#"{"v":7,"id":4,"command":{"ping":{}}}"#))
        else {
            Issue.record("accepted")
            return
        }
        #expect(id == 4)
        #expect(reason.contains("version 7"))
    }

    @Test func missingFieldNamesIt() {
        guard case .invalid(let id, let reason) = IncomingLine.decode(bytes(#"{"v":4,"command":{"ping":{}}}"#)) else {
            Issue.record("accepted")
            return
        }
        #expect(id == nil)
        #expect(reason.contains("'id'"))
    }

    @Test func garbageHasNoID() {
        guard case .invalid(let id, _) = IncomingLine.decode(bytes("hello {")) else {
            Issue.record("accepted")
            return
        }
        #expect(id == nil)
    }

    @Test func blankLinesAreIgnored() {
        #expect(IncomingLine.decode([]) == .blank)
        #expect(IncomingLine.decode(bytes(" \t")) == .blank)
    }
}

extension IncomingLineTests {
    /// A `command` object must name exactly one command; the refusal says where the fault is.
    @Test(arguments: [
        #"{"v":4,"id":6,"command":{}}"#, #"{"v":4,"id":6,"command":{"ping":{},"status":{}}}"#,
        #"{"v":4,"id":6,"command":"ping"}"#,
    ])
    func commandObjectWithoutExactlyOneCommandIsRefused(text: String) {
        guard case .invalid(let id, let reason) = IncomingLine.decode(Array(text.utf8)) else {
            Issue.record("accepted \(text)")
            return
        }
        #expect(id == 6)
        #expect(reason.contains("command"), "\(reason)")
    }
}
