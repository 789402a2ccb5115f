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
