import Shared
import Testing

@testable import vde_supervisor

/// `vde-supervisor capture`'s arguments: output, limits, and which words name the target and
/// which are the filter.
struct CaptureArgumentsTests {
    static let docker = DockerNames.Network(
        name: "lab",
        containers: [
            "e1" + String(repeating: "1", count: 62): "/web", "e2" + String(repeating: "2", count: 62): "/db",
        ],
        containerIDs: [
            "e1" + String(repeating: "1", count: 62): "c0ffee" + String(repeating: "0", count: 58),
            "e2" + String(repeating: "2", count: 62): "c0ffab" + String(repeating: "0", count: 58),
        ],
        id: "aa11" + String(repeating: "0", count: 60))

    @Test func withoutWriteATerminalGetsSummaryLinesAndAPipeGetsPcap() throws {
        let terminal = try CaptureArguments(write: nil, count: nil, duration: nil, snaplen: nil, stdoutIsTerminal: true)
        #expect(terminal.output == .summary)
        #expect(terminal.snaplen == 262_144)
        let pipe = try CaptureArguments(write: nil, count: nil, duration: nil, snaplen: nil, stdoutIsTerminal: false)
        #expect(pipe.output == .stdoutPcap)
        let dash = try CaptureArguments(write: "-", count: nil, duration: nil, snaplen: nil, stdoutIsTerminal: true)
        #expect(dash.output == .stdoutPcap)
        let file = try CaptureArguments(
            write: "/tmp/x.pcap", count: 3, duration: "2m", snaplen: 96, stdoutIsTerminal: true)
        #expect(
            file == CaptureArguments(output: .file("/tmp/x.pcap"), count: 3, durationMilliseconds: 120_000, snaplen: 96)
        )
    }

    @Test(arguments: [
        ("30", 30_000), ("30s", 30_000), ("500ms", 500), ("2m", 120_000), ("1h", 3_600_000),
    ])
    func durationsTakeSecondsOrAUnit(text: String, milliseconds: Int) throws {
        #expect(try CaptureArguments.parseDuration(text) == milliseconds)
    }

    @Test(arguments: ["", "s", "1.5s", "-3", "0", "10d", "5 s", "999999999h"])
    func aBadDurationIsRefusedWithWhatItTakes(text: String) {
        #expect(throws: CaptureError.self) { try CaptureArguments.parseDuration(text) }
    }

    @Test func badLimitsAreRefusedSayingTheRange() {
        func message(_ body: () throws(CaptureError) -> CaptureArguments) -> String {
            do {
                _ = try body()
                return ""
            } catch {
                return error.message
            }
        }
        #expect(
            message { () throws(CaptureError) in
                try CaptureArguments(write: nil, count: 0, duration: nil, snaplen: nil, stdoutIsTerminal: true)
            }.contains("at least 1"))
        #expect(
            message { () throws(CaptureError) in
                try CaptureArguments(write: nil, count: nil, duration: nil, snaplen: 0, stdoutIsTerminal: true)
            }.contains("1 to 262144"))
        #expect(
            message { () throws(CaptureError) in
                try CaptureArguments(write: nil, count: nil, duration: nil, snaplen: 262_145, stdoutIsTerminal: true)
            }.contains("1 to 262144"))
        #expect(
            message { () throws(CaptureError) in
                try CaptureArguments(write: "", count: nil, duration: nil, snaplen: nil, stdoutIsTerminal: true)
            }.contains("-w needs a file name"))
    }

    @Test func theFirstWordIsTheTargetWhenItIsAContainerOnTheNetwork() throws {
        let byName = try CaptureTarget.split(network: "lab", words: ["web", "icmp"], docker: Self.docker)
        #expect(byName.network == Self.docker.id)
        #expect(byName.endpoint == "e1" + String(repeating: "1", count: 62))
        #expect(byName.filter == "icmp")
        let byIDPrefix = try CaptureTarget.split(network: "lab", words: ["c0ffab"], docker: Self.docker)
        #expect(byIDPrefix.endpoint == "e2" + String(repeating: "2", count: 62))
        #expect(byIDPrefix.filter == nil)
    }

    @Test func aFilterWithoutTargetIsTheWholeSegmentsAndItsWordsAreJoined() throws {
        let segment = try CaptureTarget.split(
            network: "lab", words: ["icmp", "and", "host", "10.0.0.2"], docker: Self.docker)
        #expect(segment.given == nil)
        #expect(segment.endpoint == nil)
        #expect(segment.filter == "icmp and host 10.0.0.2")
        let none = try CaptureTarget.split(network: "lab", words: [], docker: nil)
        #expect(none == CaptureTarget(network: "lab"))
    }

    @Test func aHexWordIsAnEndpointPrefixForTheSupervisorWhenDockerdDoesNotKnowIt() throws {
        let target = try CaptureTarget.split(network: "aa11", words: ["e1", "arp"], docker: nil)
        #expect(target.endpoint == "e1")
        #expect(target.filter == "arp")
    }

    @Test func aContainerPrefixOfTwoContainersIsRefusedNamingThem() {
        #expect {
            try CaptureTarget.split(network: "lab", words: ["c0ff"], docker: Self.docker)
        } throws: { error in
            let message = (error as? CaptureError)?.message ?? ""
            return message.contains("2 containers") && message.contains("db") && message.contains("web")
        }
    }
}
