import Shared
import Testing

@testable import vde_networker

/// `setLink` and everything that honours an endpoint's link (add, join, restore, restarts,
/// adoption), against the fake lab: which plug runs, what a wirefilter was told, the states.
@Suite(.timeLimit(.minutes(1))) struct WorkerLinkLogicTests {
    static let delayed = LinkSettings(impairment: LinkImpairment(delayMicroseconds: 50_000))
    static let lossy = LinkSettings(impairment: LinkImpairment(lossMillipercent: 20_000))

    func started(_ fixture: FakeWorkerFixture, restoring: [EndpointSpec] = []) async throws -> [EndpointStatus] {
        let reply = try await fixture.worker.start(spec: fixture.spec, restoring: restoring)
        guard case .started(_, let endpoints) = reply else {
            throw NotYet(description: "start should reply .started, not \(reply)")
        }
        return endpoints
    }

    func plug(_ fixture: FakeWorkerFixture, _ endpoint: EndpointSpec) throws -> FakePlug {
        try #require(fixture.lab.plugs(onTap: endpoint.tapName).last { !$0.hasExited })
    }

    func running(_ fixture: FakeWorkerFixture, _ endpoint: EndpointSpec) -> [FakePlug] {
        fixture.lab.plugs(onTap: endpoint.tapName).filter { !$0.hasExited }
    }

    @Test func anImpairedEndpointIsPluggedByAWirefilterWithItsSettings() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1, link: Self.delayed)
        let status = try await fixture.worker.addEndpoint(one)
        let plug = try plug(fixture, one)
        #expect(plug.kind == .wirefilter && plug.impairment == Self.delayed.impairment)
        #expect(status.state == .plugged && status.plugPID == plug.pid)
        #expect(status.link == Self.delayed)
        #expect(status.linkManagementSocket == fixture.paths.linkManagementSocket(tap: one.tapName))
        // An unimpaired one keeps vde_plug2tap and shows no link.
        let two = fixture.endpoint(2)
        let plain = try await fixture.worker.addEndpoint(two)
        #expect(try self.plug(fixture, two).kind == .plug2tap)
        #expect(plain.link == nil && plain.linkManagementSocket == nil)
        await fixture.cleanUp()
        #expect(plug.hasExited)
    }

    @Test func impairedToImpairedChangesLiveWithoutReplugging() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1, link: Self.delayed)
        _ = try await fixture.worker.addEndpoint(one)
        let wirefilter = try plug(fixture, one)
        let status = try await fixture.worker.setLink(one.endpointID, link: Self.lossy)
        #expect(status.state == .plugged && status.plugPID == wirefilter.pid && status.link == Self.lossy)
        #expect(wirefilter.impairment == Self.lossy.impairment && wirefilter.liveChanges == 1)
        #expect(running(fixture, one).count == 1 && !wirefilter.hasExited)
        // The same link again changes nothing.
        _ = try await fixture.worker.setLink(one.endpointID, link: Self.lossy)
        #expect(wirefilter.liveChanges == 1)
        await fixture.cleanUp()
    }

    @Test func aFailedLiveChangeReplacesTheWirefilter() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1, link: Self.delayed)
        _ = try await fixture.worker.addEndpoint(one)
        let first = try plug(fixture, one)
        fixture.lab.with { $0.managementFails = true }
        let status = try await fixture.worker.setLink(one.endpointID, link: Self.lossy)
        let second = try plug(fixture, one)
        #expect(first.hasExited && second !== first)
        #expect(second.kind == .wirefilter && second.impairment == Self.lossy.impairment)
        #expect(status.state == .plugged && status.plugPID == second.pid)
        await fixture.cleanUp()
    }

    @Test func settingAndClearingReplacesThePlugKindOnTheSameTap() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        let plain = try plug(fixture, one)
        let impaired = try await fixture.worker.setLink(one.endpointID, link: Self.delayed)
        let wirefilter = try plug(fixture, one)
        #expect(plain.hasExited && wirefilter.kind == .wirefilter && impaired.plugPID == wirefilter.pid)
        #expect(wirefilter.location == .host(tapName: one.tapName))
        #expect(impaired.link == Self.delayed)
        let cleared = try await fixture.worker.setLink(one.endpointID, link: LinkSettings())
        let again = try plug(fixture, one)
        #expect(wirefilter.hasExited && again.kind == .plug2tap && cleared.plugPID == again.pid)
        #expect(cleared.link == nil && cleared.linkManagementSocket == nil && cleared.state == .plugged)
        #expect(fixture.lab.with { $0.taps[one.tapName] } == one.macAddress, "the tap stays")
        await fixture.cleanUp()
    }

    @Test func downStopsThePlugAndUpPlugsTheRightKindAgain() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1, link: Self.delayed)
        _ = try await fixture.worker.addEndpoint(one)
        let first = try plug(fixture, one)
        var down = Self.delayed
        down.down = true
        let pulled = try await fixture.worker.setLink(one.endpointID, link: down)
        #expect(pulled.state == .linkDown && pulled.plugPID == nil && pulled.link == down)
        #expect(first.hasExited && running(fixture, one).isEmpty)
        // A pulled cable is no crash: nothing restarts it, and the tap is not taken as gone.
        try await Task.sleep(for: .milliseconds(30))
        #expect(running(fixture, one).isEmpty)
        #expect(!fixture.allEvents.contains { $0.kind == .tapGone || $0.state == .tapGone })
        // Changing the impairment while down only records it.
        var downLossy = Self.lossy
        downLossy.down = true
        let stillDown = try await fixture.worker.setLink(one.endpointID, link: downLossy)
        #expect(stillDown.state == .linkDown)
        #expect(running(fixture, one).isEmpty)
        let up = try await fixture.worker.setLink(one.endpointID, link: Self.lossy)
        let second = try plug(fixture, one)
        #expect(up.state == .plugged && up.plugPID == second.pid)
        #expect(second.kind == .wirefilter && second.impairment == Self.lossy.impairment)
        await fixture.cleanUp()
    }

    @Test func aPlugRestartAndAJoinAfterALeaveKeepTheLink() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1, link: Self.delayed)
        _ = try await fixture.worker.addEndpoint(one)
        let first = try plug(fixture, one)
        first.exit()
        _ = try await fixture.event(.childRestarted) { $0.child == .plug }
        let restarted = try plug(fixture, one)
        #expect(restarted.kind == .wirefilter && restarted.impairment == Self.delayed.impairment)
        _ = try await fixture.worker.leaveEndpoint(one.endpointID)
        #expect(running(fixture, one).isEmpty)
        let joined = try await fixture.worker.joinEndpoint(one.endpointID, sandboxKey: "/run/netns/fake1")
        #expect(joined.state == .plugged && joined.link == Self.delayed)
        #expect(try plug(fixture, one).kind == .wirefilter)
        // Down, left, joined again: still down.
        _ = try await fixture.worker.setLink(one.endpointID, link: LinkSettings(down: true))
        _ = try await fixture.worker.leaveEndpoint(one.endpointID)
        let back = try await fixture.worker.joinEndpoint(one.endpointID, sandboxKey: "/run/netns/fake1")
        #expect(back.state == .linkDown && running(fixture, one).isEmpty)
        await fixture.cleanUp()
    }

    @Test func anEndpointAddedDownGetsATapAndNoPlug() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1, link: LinkSettings(down: true))
        let status = try await fixture.worker.addEndpoint(one)
        #expect(status.state == .linkDown && status.plugPID == nil)
        #expect(fixture.lab.with { $0.taps[one.tapName] } == one.macAddress)
        #expect(running(fixture, one).isEmpty)
        let up = try await fixture.worker.setLink(one.endpointID, link: LinkSettings())
        let after = try plug(fixture, one)
        #expect(up.state == .plugged && after.kind == .plug2tap)
        await fixture.cleanUp()
    }

    @Test func badValuesChangeNothing() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1, link: Self.delayed)
        _ = try await fixture.worker.addEndpoint(one)
        let bad = LinkSettings(impairment: LinkImpairment(delayMicroseconds: 1000, jitterMicroseconds: 5000))
        let reply = await fixture.worker.handle(WorkerRequest(id: 1, .setLink(endpointID: one.endpointID, link: bad)))
        guard case .failure(_, let error) = reply else {
            Issue.record("a jitter above the delay was taken: \(reply)")
            return
        }
        #expect(error.code == .invalidArgument)
        let kept = try await fixture.worker.endpointStatus(one.endpointID)
        #expect(kept.link == Self.delayed)
        #expect(try plug(fixture, one).liveChanges == 0)
        await fixture.cleanUp()
    }

    @Test func aRestoreHonoursTheLinks() async throws {
        let fixture = FakeWorkerFixture()
        let impaired = fixture.endpoint(1, link: Self.delayed)
        let pulled = fixture.endpoint(2, link: LinkSettings(down: true))
        let plain = fixture.endpoint(3)
        fixture.lab.with { state in
            for one in [impaired, pulled, plain] { state.taps[one.tapName] = one.macAddress }
        }
        let endpoints = try await started(fixture, restoring: [impaired, pulled, plain])
        #expect(endpoints.map(\.state) == [.restarting, .linkDown, .restarting])
        try await eventually("the restore") {
            let plainState = try? await fixture.worker.endpointStatus(plain.endpointID).state
            let impairedState = try? await fixture.worker.endpointStatus(impaired.endpointID).state
            return plainState == .plugged && impairedState == .plugged
        }
        #expect(try plug(fixture, impaired).kind == .wirefilter)
        #expect(try plug(fixture, plain).kind == .plug2tap)
        #expect(running(fixture, pulled).isEmpty)
        let pulledStatus = try await fixture.worker.endpointStatus(pulled.endpointID)
        #expect(pulledStatus.state == .linkDown)
        await fixture.cleanUp()
    }

    /// After a worker kill: the right kind is adopted and given its settings again; the wrong
    /// kind (the link changed while no worker ran) is replaced; a pulled cable's plug is stopped.
    @Test func anAdoptionKeepsTheRightKindAndReplacesTheWrongOne() async throws {
        let first = FakeWorkerFixture()
        _ = try await started(first)
        let right = first.endpoint(1, link: Self.delayed)
        let wrong = first.endpoint(2)
        let pulled = first.endpoint(3, link: Self.lossy)
        var plugs: [EndpointID: FakePlug] = [:]
        for one in [right, wrong, pulled] {
            _ = try await first.worker.addEndpoint(one)
            plugs[one.endpointID] = try plug(first, one)
        }
        await first.worker.detach(reason: "test")
        first.lab.leaveRunning(plugs)
        let second = FakeWorkerFixture(lab: first.lab)
        var nowWrong = wrong
        nowWrong.link = Self.lossy
        var nowPulled = pulled
        nowPulled.link = LinkSettings(impairment: Self.lossy.impairment, down: true)
        let endpoints = try await started(second, restoring: [right, nowWrong, nowPulled])
        #expect(endpoints.map(\.state) == [.plugged, .restarting, .linkDown])
        let adopted = try #require(plugs[right.endpointID])
        #expect(!adopted.hasExited && adopted.impairment == Self.delayed.impairment && adopted.liveChanges == 1)
        #expect(plugs[wrong.endpointID]?.hasExited == true)
        #expect(plugs[pulled.endpointID]?.hasExited == true)
        try await eventually("the wrong kind replaced") {
            (try? await second.worker.endpointStatus(wrong.endpointID).state) == .plugged
        }
        let replaced = try plug(second, wrong)
        #expect(replaced.kind == .wirefilter && replaced.impairment == Self.lossy.impairment)
        #expect(running(second, pulled).isEmpty)
        await second.cleanUp()
    }
}
