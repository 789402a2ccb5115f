import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The network's uplink (`vde_plug vde://CTLDIR URL`) as one more supervised child, against the
/// fake lab: started after the switch, restarted with backoff and reported, started again after
/// the switch, adopted from a dead worker, stopped at shutdown, left running by a detach, and
/// every container endpoint announced after each start. The same with real processes:
/// NetworkerIntegrationTests/UplinkTests.swift.
@Suite(.timeLimit(.minutes(1))) struct UplinkTests {
    func status(_ fixture: FakeWorkerFixture) async -> WorkerStatus { await fixture.worker.status() }

    /// An endpoint joined to a container whose interface dockerd moved and renamed to `eth0`.
    func containerEndpoint(_ fixture: FakeWorkerFixture, _ n: Int) async throws -> EndpointSpec {
        var one = fixture.endpoint(n)
        one.ipv4Address = try IPv4Address("10.16.0.\(n)")
        let key = try SandboxKey("/run/netns/fake-uplink-\(n)")
        _ = try await fixture.worker.addEndpoint(one)
        _ = try await fixture.worker.joinEndpoint(one.endpointID, sandboxKey: key)
        fixture.lab.with { state in
            state.taps[one.tapName] = nil
            state.sandboxes[key] = .namespace
            state.links[key] = [
                LinkInfo(name: "lo", macAddress: nil), LinkInfo(name: "eth0", macAddress: one.macAddress),
            ]
        }
        return one
    }

    @Test func theUplinkRunsOnItsOwnPortWhichIsNeitherAnEndpointNorAnOtherPort() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec(), restoring: [])
        let uplink = try #require(fixture.lab.runningUplink)
        #expect(uplink.url == FakeWorkerFixture.uplinkURL)
        #expect(uplink.isWatched)
        _ = try await fixture.worker.addEndpoint(fixture.endpoint(1))
        let report = await status(fixture)
        let shown = try #require(report.uplink)
        #expect(shown.url == FakeWorkerFixture.uplinkURL)
        #expect(shown.state == .running && shown.pid == uplink.pid && shown.restarts == 0 && shown.detail == nil)
        let port = try #require(shown.counters?.port)
        #expect(shown.counters?.peerPID == uplink.pid)
        #expect(report.otherPorts == [], "the uplink's port \(port) is ours: \(report.otherPorts ?? [])")
        #expect(report.externalPorts?.isEmpty == true)
        #expect(report.endpoints.first?.port != port)
        await fixture.cleanUp()
    }

    @Test func theUplinkArgvIsVdePlugFromTheSwitchToTheURL() throws {
        let executables = Executables(
            vdeSwitch: "/usr/bin/vde_switch", vdePlug2tap: "/usr/bin/vde_plug2tap", ip: "/usr/sbin/ip",
            nsenter: "/usr/bin/nsenter", vdePlug: "/usr/bin/vde_plug")
        #expect(
            UplinkProcess.argv(
                ctlDir: "/run/vde-supervisor/abc/ctl", url: "vxvde://239.255.16.1", executables: executables)
                == ["/usr/bin/vde_plug", "vde:///run/vde-supervisor/abc/ctl", "vxvde://239.255.16.1"])
        // The switch the worker starts gets a port for the uplink beyond num_switchports.
        var spec = try SwitchSpec(
            networkDir: "/run/vde-supervisor/abc", ctlDir: "/run/vde-supervisor/abc/ctl",
            managementSocket: "/run/vde-supervisor/abc/mgmt",
            mode: .own, group: nil, numPorts: 32)
        #expect(SwitchProcess.argv(spec: spec, executables: executables).suffix(2) == ["-n", "33"])
        spec.uplink = "vxvde://239.255.16.1"
        #expect(SwitchProcess.argv(spec: spec, executables: executables).suffix(2) == ["-n", "34"])
    }

    /// `num_switchports` containers fit beside the uplink: its port is the extra one.
    @Test func theUplinksPortIsNotTakenFromTheClients() async throws {
        let fixture = FakeWorkerFixture()
        // The switch the worker starts for 2 ports and an uplink has 3 (-n 4).
        fixture.lab.with { $0.capacity = 3 }
        var spec = try SwitchSpec(paths: fixture.paths, mode: .own, group: nil, numPorts: 2)
        spec.uplink = FakeWorkerFixture.uplinkURL
        _ = try await fixture.worker.start(spec: spec, restoring: [])
        #expect(fixture.lab.runningUplink != nil)
        _ = try await fixture.worker.addEndpoint(fixture.endpoint(1))
        _ = try await fixture.worker.addEndpoint(fixture.endpoint(2))
        await #expect(throws: PlugError.self) { try await fixture.worker.addEndpoint(fixture.endpoint(3)) }
        let report = await status(fixture)
        #expect(report.switch?.numPorts == 2)
        #expect(report.endpoints.map(\.state) == [.plugged, .plugged])
        await fixture.cleanUp()
    }

    @Test func aNetworkWithoutUplinkRunsNoneAndReportsNone() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec, restoring: [])
        #expect(fixture.lab.uplinks.isEmpty)
        #expect(await status(fixture).uplink == nil)
        await fixture.cleanUp()
    }

    @Test func aCrashedUplinkIsReportedRestartedWithBackoffAndTheContainersAreAnnounced() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec(), restoring: [])
        let one = try await containerEndpoint(fixture, 1)
        _ = try await fixture.worker.addEndpoint(fixture.endpoint(2))  // not joined: nothing to announce
        let first = try #require(fixture.lab.runningUplink)
        #expect(fixture.lab.announcements.isEmpty)

        first.exit(reason: "killed by signal 9")
        let exited = try await fixture.event(.childExited) { $0.child == .uplink }
        #expect(exited.pid == first.pid && exited.endpointID == nil)
        #expect(exited.detail?.contains("killed by signal 9") == true)
        // The first restart is immediate.
        let restarted = try await fixture.event(.childRestarted) { $0.child == .uplink }
        let second = try #require(fixture.lab.runningUplink)
        #expect(restarted.pid == second.pid && second.pid != first.pid)
        let announced = try await eventually("an announcement") { fixture.lab.announcements.first }
        #expect(fixture.lab.announcements.count == 1, "only the container endpoint: \(fixture.lab.announcements)")
        #expect(announced.contains("--net=/run/netns/fake-uplink-1"))
        #expect(Array(announced.suffix(4)) == ["-I", "eth0", "--", one.ipv4Address?.rawValue ?? "?"])
        var report = await status(fixture)
        #expect(report.uplink?.state == .running && report.uplink?.restarts == 1 && report.uplink?.pid == second.pid)
        #expect(report.otherPorts == [], "the dead uplink's port is freed, the new one is ours")

        // A second crash soon after: the next attempt waits (RestartBackoff.child), and counts.
        second.exit(reason: "killed by signal 9")
        _ = try await fixture.event(.childExited) { $0.child == .uplink && $0.pid == second.pid }
        #expect(await fixture.worker.uplink?.backoff.attempts == 2)
        let third = try await fixture.event(.childRestarted) { $0.child == .uplink && $0.pid != second.pid }
        #expect(third.pid == fixture.lab.runningUplink?.pid)
        report = await status(fixture)
        #expect(report.uplink?.restarts == 2)
        try await eventually("a second announcement") { fixture.lab.announcements.count == 2 }
        await fixture.cleanUp()
    }

    @Test func anUplinkThatCannotStartIsRetriedAndShowsWhy() async throws {
        let fixture = FakeWorkerFixture()
        fixture.lab.with {
            $0.uplinkFailure = .noInterface(name: "vxuFake", url: FakeWorkerFixture.uplinkURL)
        }
        let reply = try await fixture.worker.start(spec: fixture.spec(), restoring: [])
        guard case .started = reply else {
            Issue.record("the network must start without its uplink: \(reply)")
            return
        }
        let report = await status(fixture)
        #expect(report.uplink?.state == .restarting)
        #expect(report.uplink?.pid == nil)
        #expect(report.uplink?.detail?.contains("vxuFake") == true)
        fixture.lab.with { $0.uplinkFailure = nil }
        let restarted = try await fixture.event(.childRestarted) { $0.child == .uplink }
        #expect(restarted.pid == fixture.lab.runningUplink?.pid)
        #expect(await status(fixture).uplink?.state == .running)
        await fixture.cleanUp()
    }

    @Test func theUplinkGoesWithTheSwitchAndComesBackAfterIt() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec(), restoring: [])
        _ = try await containerEndpoint(fixture, 1)
        let uplink = try #require(fixture.lab.runningUplink)
        let oldSwitch = try #require(fixture.lab.runningSwitch)
        oldSwitch.exit(reason: "killed by signal 9")
        // The real vde_plug exits with its switch, a moment later.
        uplink.exit(reason: "exited with status 1")
        _ = try await fixture.event(.childRestarted) { $0.child == .switch }
        let restarted = try await fixture.event(.childRestarted) { $0.child == .uplink }
        let next = try #require(fixture.lab.runningUplink)
        #expect(restarted.pid == next.pid && next.pid != uplink.pid)
        #expect(restarted.detail == "after the switch restarted")
        #expect(
            !fixture.allEvents.contains { $0.kind == .childExited && $0.child == .uplink },
            "the uplink's exit with its switch is not a crash of its own")
        let report = await status(fixture)
        #expect(report.uplink?.state == .running && report.uplink?.restarts == 1)
        #expect(report.uplink?.counters != nil)
        try await eventually("the container announced") { !fixture.lab.announcements.isEmpty }
        #expect(fixture.lab.uplinks.count == 2)
        await fixture.cleanUp()
    }

    /// The kernel closes a killed switch's sockets before its exit shows, so the uplink's exit
    /// can be seen first: still no crash of its own.
    @Test func anUplinkExitSeenBeforeItsSwitchsIsStillTheSwitchs() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec(), restoring: [])
        let uplink = try #require(fixture.lab.runningUplink)
        let oldSwitch = try #require(fixture.lab.runningSwitch)
        uplink.exit(reason: "exited with status 1")
        // Not synchronisation: the gap between the two exits the worker sees.
        try await Task.sleep(for: .milliseconds(20))
        oldSwitch.exit(reason: "killed by signal 9")
        let restarted = try await fixture.event(.childRestarted) { $0.child == .uplink }
        #expect(restarted.detail == "after the switch restarted")
        #expect(!fixture.allEvents.contains { $0.kind == .childExited && $0.child == .uplink })
        #expect(await status(fixture).uplink?.restarts == 1)
        await fixture.cleanUp()
    }

    @Test func shutdownStopsTheUplink() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec(), restoring: [])
        let uplink = try #require(fixture.lab.runningUplink)
        await fixture.worker.shutdown(reason: "test")
        #expect(uplink.hasExited)
        #expect(await fixture.worker.uplink?.state == .stopped)
        #expect(!fixture.allEvents.contains { $0.kind == .childExited || $0.kind == .childRestarted })
        #expect(fixture.lab.uplinks.count == 1, "not restarted")
        await fixture.cleanUp()
    }

    @Test func detachLeavesTheUplinkRunningUnwatchedAndTheNextWorkerAdoptsIt() async throws {
        let first = FakeWorkerFixture()
        _ = try await first.worker.start(spec: first.spec(), restoring: [])
        let uplink = try #require(first.lab.runningUplink)
        await first.worker.detach(reason: "test")
        #expect(!uplink.hasExited && !uplink.isWatched)

        first.lab.leaveRunning([:])
        first.lab.with { $0.leftoverUplink = (uplink, FakeWorkerFixture.uplinkURL) }
        let second = FakeWorkerFixture(lab: first.lab)
        _ = try await second.worker.start(spec: second.spec(), restoring: [])
        #expect(second.lab.uplinks.count == 1, "no new uplink")
        #expect(uplink.isWatched)
        let report = await status(second)
        #expect(report.uplink?.pid == uplink.pid && report.uplink?.state == .running)
        #expect(report.uplink?.counters?.peerPID == uplink.pid)
        #expect(report.otherPorts == [])
        #expect(second.lab.announcements.isEmpty, "an adopted uplink kept its UDP port: nothing to announce")
        // Adopted, it is this worker's: a crash is restarted.
        uplink.exit()
        _ = try await second.event(.childRestarted) { $0.child == .uplink }
        await second.cleanUp()
    }

    @Test func aLeftoverUplinkWithAnotherURLIsStoppedAndTheSpecsOneStarted() async throws {
        let first = FakeWorkerFixture()
        let old: UplinkURL = "vxvde://239.255.16.201/if=vxuFake"
        _ = try await first.worker.start(spec: first.spec(uplink: old), restoring: [])
        let uplink = try #require(first.lab.runningUplink)
        await first.worker.detach(reason: "test")
        first.lab.leaveRunning([:])
        first.lab.with { $0.leftoverUplink = (uplink, old) }
        let second = FakeWorkerFixture(lab: first.lab)
        _ = try await second.worker.start(spec: second.spec(), restoring: [])
        #expect(uplink.hasExited)
        #expect(second.lab.with { $0.stoppedLeftoverUplinks.count } == 1)
        #expect(second.lab.runningUplink?.url == FakeWorkerFixture.uplinkURL)
        await second.cleanUp()
    }

    /// The switch died while no worker ran: the uplink it left is stopped, not adopted onto a
    /// switch it was never attached to, and a new one is started.
    @Test func withoutASwitchToAdoptTheLeftoverUplinkIsReplaced() async throws {
        let first = FakeWorkerFixture()
        _ = try await first.worker.start(spec: first.spec(), restoring: [])
        let uplink = try #require(first.lab.runningUplink)
        await first.worker.detach(reason: "test")
        first.lab.runningSwitch?.exit()
        first.lab.leaveRunning([:])
        first.lab.with { $0.leftoverUplink = (uplink, FakeWorkerFixture.uplinkURL) }
        let second = FakeWorkerFixture(lab: first.lab)
        _ = try await second.worker.start(spec: second.spec(), restoring: [])
        #expect(uplink.hasExited)
        let next = try #require(second.lab.runningUplink)
        #expect(next.pid != uplink.pid)
        await second.cleanUp()
    }
}
