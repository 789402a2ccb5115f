import Shared
import Testing

@testable import vde_supervisor

/// `vde-supervisor link`'s words, its Docker name resolution, and how links are shown.
struct LinkCommandTests {
    @Test func wordsWithAndWithoutAContainer() throws {
        let whole = try LinkCommand.parse(network: "lab", words: ["set", "delay=50ms", "loss=2%"])
        #expect(whole.container == nil)
        #expect(whole.request == LinkRequest(network: "lab", action: .set, settings: ["delay": "50ms", "loss": "2%"]))
        let one = try LinkCommand.parse(network: "lab", words: ["web", "clear", "delay"])
        #expect(one.container == "web")
        #expect(one.request == LinkRequest(network: "lab", endpoint: "web", action: .clear, keys: ["delay"]))
        #expect(try LinkCommand.parse(network: "lab", words: ["web", "down"]).request.action == .down)
        #expect(try LinkCommand.parse(network: "lab", words: ["up"]).container == nil)
        // A container called like an action: the second word is the action.
        let named = try LinkCommand.parse(network: "lab", words: ["down", "up"])
        #expect(named.container == "down")
        #expect(named.request.action == .up)
        // A value may hold '='; only the first splits.
        #expect(
            try LinkCommand.parse(network: "lab", words: ["set", "delay=5=ms"]).request.settings == ["delay": "5=ms"])
    }

    @Test(arguments: [
        ([], "missing the action"),
        (["web"], "'web' is no action"),
        (["web", "shake"], "unknown action 'shake'"),
        (["set", "delay"], "not KEY=VALUE"),
        (["set", "=5ms"], "not KEY=VALUE"),
        (["set", "delay=1ms", "delay=2ms"], "given twice"),
        (["show", "delay"], "takes no arguments"),
    ])
    func badWordsAreRefused(words: [String], message: String) {
        do {
            let parsed = try LinkCommand.parse(network: "lab", words: words)
            Issue.record("accepted \(words): \(parsed)")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
        }
    }

    static let docker = DockerNames.Network(
        name: "lab", containers: ["ep1": "/web", "ep2": "db", "ep3": "dbx"],
        containerIDs: ["ep1": "c0ffee01", "ep2": "c0ffee02", "ep3": "abc"], id: "net0123")

    @Test func containersResolveToTheirEndpointOnThatNetwork() throws {
        func endpoint(_ container: String) throws -> String? {
            try LinkTarget.resolve(network: "lab", container: container, docker: Self.docker).endpoint
        }
        #expect(try endpoint("web") == "ep1", "dockerd may put a slash before the name")
        #expect(try endpoint("db") == "ep2", "a name is matched whole, before any prefix")
        #expect(try endpoint("c0ffee02") == "ep2")
        #expect(try endpoint("ab") == "ep3", "a unique container ID prefix")
        #expect(try endpoint("e9") == "e9", "otherwise an endpoint ID prefix, for the supervisor")
        #expect(throws: LinkTarget.Failure.self) { try endpoint("c0ffee") }
        #expect(try LinkTarget.resolve(network: "lab", container: nil, docker: Self.docker).network == "net0123")
        // dockerd not answering: what the user typed goes to the supervisor as it is.
        let offline = try LinkTarget.resolve(network: "3f2a", container: "web", docker: nil)
        #expect(offline == LinkTarget(network: "3f2a", endpoint: "web", docker: nil))
    }

    @Test func ambiguousContainerPrefixNamesTheCandidates() {
        do {
            _ = try LinkTarget.resolve(network: "lab", container: "c0ffee0", docker: Self.docker)
            Issue.record("accepted an ambiguous prefix")
        } catch {
            #expect(error.message.contains("2 containers"))
            #expect(error.message.contains("/web") || error.message.contains("web"))
            #expect(error.message.contains("db"))
        }
    }

    @Test func dockerAnswerGivesContainerIDs() throws {
        let body = #"{"Id":"net0123","Name":"lab","Containers":{"c0ffee01":{"Name":"web","EndpointID":"ep1"}}}"#
        let network = try #require(DockerNames.decode(Array(body.utf8)))
        #expect(network.id == "net0123")
        #expect(network.containerIDs == ["ep1": "c0ffee01"])
        #expect(DockerNames.inspect(socket: "/nonexistent/docker.sock", network: "lab") == nil)
        #expect(DockerNames.inspect(socket: "/nonexistent/docker.sock", network: "../x") == nil)
    }

    @Test func linksAreShownShort() {
        #expect(LinkInfo(LinkSettings()).short == "-")
        #expect(LinkInfo(LinkSettings(down: true)).short == "down")
        let impaired = LinkImpairment(delayMicroseconds: 50_000, lossMillipercent: 2000)
        #expect(LinkInfo(LinkSettings(impairment: impaired)).short == "delay=50ms loss=2%")
        #expect(LinkInfo(LinkSettings(impairment: impaired, down: true)).short == "down, delay=50ms loss=2%")
        #expect(LinkInfo(LinkSettings(impairment: impaired)).settings == ["delay": "50ms", "loss": "2%"])
    }

    @Test func theLinkTableHasOneLinePerEndpoint() {
        let reply = LinkReply(
            network: "3f2a1b9c0d1e0000", shortNetwork: "3f2a1b9c0d1e",
            networkDefault: LinkInfo(LinkSettings(impairment: LinkImpairment(delayMicroseconds: 20_000))),
            endpoints: [
                .init(
                    id: "a1", shortID: "a1", tap: "vdea1",
                    link: LinkInfo(LinkSettings(impairment: LinkImpairment(delayMicroseconds: 20_000))),
                    state: "plugged", container: "/web"),
                .init(
                    id: "b2", shortID: "b2", tap: "vdeb2", link: LinkInfo(LinkSettings(down: true)),
                    state: "restarting",
                    note: "recorded; the worker is restarting: it applies the recorded link when it is back"),
            ], changed: true)
        let text = LinkCommand.render(reply, networkName: "lab", wholeNetwork: true)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0] == "network lab (3f2a1b9c0d1e): default delay=20ms")
        #expect(lines[2].hasPrefix("web "))
        #expect(lines[2].contains(" up ") && lines[2].contains("delay=20ms") && lines[2].hasSuffix("plugged"))
        #expect(lines[3].contains(" down ") && lines[3].contains("none"))
        #expect(lines[4].hasPrefix("b2: recorded; the worker is restarting"))
    }

    @Test func statusShowsEachEndpointsLink() {
        var report = StatusTableTests.report
        report.networks[0].endpoints[0].link = LinkInfo(
            LinkSettings(impairment: LinkImpairment(delayMicroseconds: 50_000, lossMillipercent: 2000)))
        let text = StatusTable(report: report, color: false, detailed: false).render()
        #expect(text.contains("LINK"))
        #expect(text.contains("delay=50ms loss=2%"))
        report.networks[0].endpoints[0].link = LinkInfo(LinkSettings(down: true))
        report.networks[0].endpoints[0].state = "linkDown"
        let down = StatusTable(report: report, color: false, detailed: false).render()
        #expect(down.contains("linkDown"))
        #expect(down.contains("  down"))
    }
}
