import Shared
import Testing

@testable import vde_supervisor

struct StatusTableTests {
    static let report = StatusReport(
        supervisor: .init(
            pid: 42, pluginSocket: "/run/docker/plugins/vde.sock", stateDir: "/var/lib/vde-supervisor",
            uptimeSeconds: 3725, statusLine: "1 network(s), 1 endpoint(s); workers: 1 healthy"),
        networks: [
            .init(
                id: "3f2a1b9c0d1e" + String(repeating: "0", count: 52), shortID: "3f2a1b9c0d1e",
                subnets: ["10.77.1.0/24"], gateways: ["10.77.1.1/24"],
                switch: .init(
                    ctlDir: "/run/vde-supervisor/3f2a1b9c0d1e/ctl", managementSocket: nil, ownership: "own",
                    pid: 100, numPorts: 32),
                worker: .init(pid: 99, state: "running", uptimeSeconds: 61, restarts: 2, lastError: nil),
                healthy: true,
                endpoints: [
                    .init(
                        id: "a1b2c3d4e5f6", shortID: "a1b2c3d4e5f6", tap: "vdea1b2c3d4e5f6",
                        macAddress: "02:00:00:00:00:01",
                        ipv4: "10.77.1.10/24", ipv6: nil, sandbox: "/var/run/docker/netns/abc", state: "plugged",
                        plugPID: 101, switchPort: 1,
                        counters: .init(inPackets: 12, inBytes: 2048, outPackets: 10, outBytes: 980))
                ],
                otherPorts: [])
        ],
        healthy: true)

    @Test func plainTableHasTheFactsAndNoEscapes() {
        let text = StatusTable(report: Self.report, color: false, detailed: false).render()
        for fact in [
            "3f2a1b9c0d1e", "10.77.1.0/24", "/run/vde-supervisor/3f2a1b9c0d1e/ctl", "own", "running", "1h2m",
            "vdea1b2c3d4e5f6", "02:00:00:00:00:01", "10.77.1.10/24", "12/2.0KiB", "10/980B", "plugged", "101",
        ] {
            #expect(text.contains(fact), "missing \(fact)")
        }
        #expect(!text.contains("\u{1B}"))
    }

    @Test func unreachableEndpointShowsItsReasonInADetailColumn() {
        var report = Self.report
        report.networks[0].endpoints[0].state = "unreachable"
        report.networks[0].endpoints[0].plugPID = nil
        report.networks[0].endpoints[0].detail = "cannot list links: Permission denied"
        let text = StatusTable(report: report, color: false, detailed: false).render()
        #expect(text.contains("DETAIL"))
        #expect(text.contains("unreachable"))
        #expect(text.contains("cannot list links: Permission denied"))
        #expect(!StatusTable(report: Self.report, color: false, detailed: false).render().contains("DETAIL"))
    }

    @Test func colourOnlyWhenAsked() {
        #expect(StatusTable(report: Self.report, color: true, detailed: false).render().contains("\u{1B}[32mrunning"))
    }

    @Test func columnsAlignIgnoringColourCodes() {
        #expect(StatusTable.visibleWidth("\u{1B}[31mfailed\u{1B}[0m") == 6)
    }

    @Test func humanUnits() {
        #expect(StatusTable.bytes(512) == "512B")
        #expect(StatusTable.bytes(1536) == "1.5KiB")
        #expect(StatusTable.duration(59) == "59s")
        #expect(StatusTable.duration(90061) == "1d1h")
    }
}

/// External and lost ports, and Docker's names, in the table and the `status NAME` selection.
struct StatusExternalPortTests {
    static var report: StatusReport {
        var report = StatusTableTests.report
        report.networks[0].otherPorts = [
            .init(
                port: 3, peer: "vde_plug2tap: user=root pid=4242",
                counters: .init(inPackets: 5, inBytes: 420, outPackets: 7, outBytes: 600), program: "vde_plug2tap",
                pid: 4242, macAddresses: ["02:11:22:33:44:55"])
        ]
        return report
    }

    @Test func externalPortsShowProgramPidMACAndCounters() {
        let text = StatusTable(report: Self.report, color: false, detailed: false).render()
        for fact in ["EXTERNAL PORT", "vde_plug2tap", "4242", "02:11:22:33:44:55", "5/420B", "7/600B"] {
            #expect(text.contains(fact), "missing \(fact):\n\(text)")
        }
        #expect(!text.contains("LOST PORT"))
        let detailed = StatusTable(report: Self.report, color: false, detailed: true).render()
        #expect(detailed.contains("vde_plug2tap: user=root pid=4242"), "the detail view shows the full description")
    }

    @Test func lostPortsAreNamedWithTheirSwitch() {
        var report = Self.report
        report.networks[0].lostPorts = [
            .init(
                switchPID: 777, detail: "killed by signal 9", at: 1_796_160_605,
                ports: [.init(port: 4, peer: "QEMU user=root pid=999", program: "QEMU", pid: 999, macAddresses: [])])
        ]
        let text = StatusTable(report: report, color: false, detailed: false).render()
        for fact in ["LOST PORT", "QEMU", "999", "777", "killed by signal 9", "UTC", "restart those VMs"] {
            #expect(text.contains(fact), "missing \(fact):\n\(text)")
        }
    }

    @Test func utcTimes() {
        #expect(StatusTable.utcTime(0) == "1970-01-01 00:00:00 UTC")
        #expect(StatusTable.utcTime(1_796_160_605) == "2026-12-01 21:30:05 UTC")
    }

    @Test func dockerNamesLabelNetworksAndContainers() throws {
        let body = """
            {"Name":"lab","Id":"\(StatusTableTests.report.networks[0].id)","Driver":"vde",
             "Containers":{"c0ffee":{"Name":"web","EndpointID":"a1b2c3d4e5f6","MacAddress":"02:00:00:00:00:01"},
                           "beef":{"Name":"","EndpointID":"ffff"}}}
            """
        let network = try #require(DockerNames.decode(Array(body.utf8)))
        #expect(network.name == "lab")
        #expect(network.containers == ["a1b2c3d4e5f6": "web"])
        var report = Self.report
        DockerNames(networks: [report.networks[0].id: network]).label(&report)
        #expect(report.networks[0].name == "lab")
        #expect(report.networks[0].endpoints[0].container == "web")
        let text = StatusTable(report: report, color: false, detailed: false).render()
        #expect(text.contains("lab") && text.contains("web"), "\(text)")
        #expect(DockerNames.decode(Array("not json".utf8)) == nil)
    }

    @Test func dockerdAbsentMeansNoNamesAndNoError() {
        let names = DockerNames.fetch(socket: "/nonexistent/docker.sock", networkIDs: ["abc"])
        #expect(names.networks.isEmpty)
    }

    @Test func selectionByNameThenIDPrefixThenContainer() {
        var a = StatusTableTests.report.networks[0]
        a.name = "lab"
        a.endpoints[0].container = "web"
        var b = a
        b.id = "lab" + String(repeating: "1", count: 61)
        b.name = "other"
        b.endpoints[0].container = "db"
        #expect(NetworkSelection.select("lab", in: [a, b]).map(\.name) == ["lab"], "a name beats an ID prefix")
        #expect(NetworkSelection.select("3f2a", in: [a, b]).map(\.name) == ["lab"])
        #expect(NetworkSelection.select("db", in: [a, b]).map(\.name) == ["other"])
        #expect(NetworkSelection.select("nothing", in: [a, b]).isEmpty)
    }
}

@Suite struct StatusTableUplinkTests {
    /// The uplink's line: URL, state, pid, port, frames from and to the other hosts, restarts,
    /// and the MTU the uplink gave the network.
    @Test func anUplinkHasALineWithItsCountersAndRestarts() {
        var report = StatusTableTests.report
        report.networks[0].mtu = 1450
        report.networks[0].uplink = .init(
            url: "vxvde://239.255.1.1/if=vxt0", state: "running", pid: 4242, switchPort: 3,
            counters: .init(inPackets: 7, inBytes: 700, outPackets: 9, outBytes: 900), restarts: 1, detail: nil)
        let text = StatusTable(report: report, color: false, detailed: false).render()
        for fact in ["UPLINK", "vxvde://239.255.1.1/if=vxt0", "running", "4242", "7/700B", "9/900B", "mtu 1450"] {
            #expect(text.contains(fact), "missing \(fact) in \(text)")
        }
        #expect(
            !StatusTable(report: StatusTableTests.report, color: false, detailed: false).render().contains("UPLINK"))
    }

    @Test func aWorkerThatDidNotAnswerLeavesTheUplinkUnknown() {
        let info = VDEPlugin.uplinkInfo(url: UplinkURL("vxvde://239.255.1.1"), reply: nil)
        #expect(info.state == "unknown" && info.pid == nil && info.counters == nil)
        let running = VDEPlugin.uplinkInfo(
            url: UplinkURL("vxvde://239.255.1.1"),
            reply: UplinkStatus(
                url: UplinkURL("vxvde://239.255.1.1"), state: .restarting, counters: PortCounters(port: 5),
                restarts: 2, detail: "killed by signal 9"))
        #expect(running.state == "restarting" && running.switchPort == 5 && running.restarts == 2)
        #expect(running.detail == "killed by signal 9")
    }
}
