import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// A worker that follows a dead one adopts what it left running (the switch, the plugs of the
/// endpoints it restores) instead of starting anew; `detach` leaves everything running and
/// watches nothing any more. Against the fake lab; the same with real processes is in
/// NetworkerIntegrationTests (DataPathSurvivalTests).
@Suite(.timeLimit(.minutes(1))) struct WorkerAdoptionTests {
    /// A first worker with `count` endpoints, then detached (what its kill leaves: nothing
    /// watches any more, everything runs).
    func deadWorker(endpoints count: Int) async throws -> (FakeWorkerFixture, [EndpointSpec], [EndpointID: FakePlug]) {
        let first = FakeWorkerFixture()
        _ = try await first.worker.start(spec: first.spec, restoring: [])
        var specs: [EndpointSpec] = []
        var plugs: [EndpointID: FakePlug] = [:]
        for n in 1...count {
            let one = first.endpoint(n)
            _ = try await first.worker.addEndpoint(one)
            specs.append(one)
            let plug = first.lab.plugs(onTap: one.tapName).last
            #expect(plug != nil)
            plugs[one.endpointID] = plug
        }
        await first.worker.detach(reason: "test")
        return (first, specs, plugs)
    }

    @Test func detachLeavesTheSwitchAndPlugsRunningAndWatchesNothing() async throws {
        let (first, specs, plugs) = try await deadWorker(endpoints: 2)
        let running = try #require(first.lab.runningSwitch)
        #expect(!running.isWatched)
        for plug in plugs.values {
            #expect(!plug.hasExited)
            #expect(!plug.isWatched && !plug.isWatchingTap)
        }
        // What happens to them now is no longer the worker's business: no restart, no event.
        let plug = try #require(plugs[specs[0].endpointID])
        plug.exit()
        running.exit()
        try await Task.sleep(for: .milliseconds(20))
        #expect(first.allEvents.filter { $0.kind == .childExited || $0.kind == .childRestarted }.isEmpty)
        #expect(first.lab.plugs.count == 2 && first.lab.switchStarts == 1)
        let refused = await first.worker.handle(WorkerRequest(id: 1, .addEndpoint(endpoint: first.endpoint(3))))
        guard case .failure(_, let error) = refused else {
            Issue.record("a request after detach was served: \(refused)")
            return
        }
        #expect(error.code == .unavailable)
    }

    @Test func aNewWorkerAdoptsTheSwitchAndThePlugsOfTheEndpointsItRestores() async throws {
        let (first, specs, plugs) = try await deadWorker(endpoints: 3)
        let oldSwitch = try #require(first.lab.runningSwitch)
        first.lab.leaveRunning(plugs)
        let second = FakeWorkerFixture(lab: first.lab)
        let restored = Array(specs.prefix(2))
        let reply = try await second.worker.start(spec: second.spec, restoring: restored)
        guard case .started(let status, let endpoints) = reply else {
            Issue.record("start replied \(reply)")
            return
        }
        #expect(status.pid == oldSwitch.pid && status.owned)
        #expect(second.lab.switchStarts == 1, "no new switch")
        #expect(oldSwitch.isWatched)
        #expect(endpoints.map(\.state) == [.plugged, .plugged])
        #expect(endpoints.map(\.plugPID) == restored.map { plugs[$0.endpointID]?.pid })
        #expect(second.lab.plugs.count == 3, "no new plug")
        for one in restored {
            let plug = try #require(plugs[one.endpointID])
            #expect(!plug.hasExited && plug.isWatched && plug.isWatchingTap)
        }
        // The endpoint not restored (removed while no worker ran): its plug is stopped.
        #expect(plugs[specs[2].endpointID]?.hasExited == true)
        // The adopted ones are this worker's now: a crash is restarted.
        plugs[restored[0].endpointID]?.exit()
        let restarted = try await second.event(.childRestarted) { $0.child == .plug }
        #expect(restarted.endpointID == restored[0].endpointID)
        await second.cleanUp()
        #expect(oldSwitch.hasExited)
        #expect(plugs.values.allSatisfy { $0.hasExited })
    }

    /// A supervisor that adopts a running worker sends `start` again: a container removed while
    /// none was linked (its sandbox gone) is reported `tapGone` and its plug stopped; a sandbox
    /// that cannot be checked keeps its endpoint.
    @Test func aRepeatedStartDropsEndpointsWhoseSandboxIsGone() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec, restoring: [])
        let gone = fixture.endpoint(1)
        let unknown = fixture.endpoint(2)
        let goneKey: SandboxKey = "/run/netns/fake-removed"
        let unknownKey: SandboxKey = "/run/netns/fake-unknown"
        fixture.lab.with { state in
            state.sandboxes[goneKey] = .namespace
            state.sandboxes[unknownKey] = .namespace
        }
        for (one, key) in [(gone, goneKey), (unknown, unknownKey)] {
            _ = try await fixture.worker.addEndpoint(one)
            _ = try await fixture.worker.joinEndpoint(one.endpointID, sandboxKey: key)
        }
        let gonePlug = try #require(fixture.lab.plugs(onTap: gone.tapName).last)
        // dockerd removed one container; the other's namespace cannot be looked at.
        fixture.lab.with { state in
            state.sandboxes[goneKey] = nil
            state.sandboxes[unknownKey] = .cannotCheck(errno: EACCES)
        }
        let reply = try await fixture.worker.start(spec: fixture.spec, restoring: [gone, unknown])
        guard case .started(_, let endpoints) = reply else {
            Issue.record("start replied \(reply)")
            return
        }
        #expect(endpoints.first { $0.endpointID == gone.endpointID }?.state == .tapGone)
        #expect(endpoints.first { $0.endpointID == unknown.endpointID }?.state == .plugged)
        #expect(gonePlug.hasExited)
        await fixture.cleanUp()
    }

    /// The switch died while no worker ran: a new one is started and every endpoint is plugged
    /// anew; a plug still listed is not adopted onto a switch it was never attached to.
    @Test func withoutASwitchToAdoptLeftoverPlugsAreStoppedAndEndpointsReplugged() async throws {
        let (first, specs, plugs) = try await deadWorker(endpoints: 1)
        first.lab.runningSwitch?.exit()
        first.lab.leaveRunning(plugs)
        let second = FakeWorkerFixture(lab: first.lab)
        _ = try await second.worker.start(spec: second.spec, restoring: specs)
        #expect(second.lab.switchStarts == 2)
        let old = try #require(plugs[specs[0].endpointID])
        #expect(old.hasExited)
        let plugged = try await second.event(.endpointState) { $0.state == .plugged }
        #expect(plugged.pid != nil && plugged.pid != old.pid)
        await second.cleanUp()
    }
}
