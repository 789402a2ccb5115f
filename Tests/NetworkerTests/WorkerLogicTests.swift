import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's decisions against a fake switch, fake plugs and fake taps (``FakeLab``): what
/// it starts, restarts, re-plugs, marks and deletes. No root, no processes; the same paths with
/// real vde_switch, plugs and namespaces are in NetworkerIntegrationTests.
@Suite(.timeLimit(.minutes(1))) struct WorkerLogicTests {
    func started(_ fixture: FakeWorkerFixture, restoring: [EndpointSpec] = []) async throws
        -> (switch: SwitchStatus, endpoints: [EndpointStatus])
    {
        let reply = try await fixture.worker.start(spec: fixture.spec, restoring: restoring)
        guard case .started(let status, let endpoints) = reply else {
            throw NotYet(description: "start should reply .started, not \(reply)")
        }
        return (status, endpoints)
    }

    func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    @Test func anAddedEndpointGetsATapAndAPlugOnIt() async throws {
        let fixture = FakeWorkerFixture()
        let result = try await started(fixture)
        #expect(result.switch.owned == true)
        #expect(fixture.lab.switchStarts == 1)
        let one = fixture.endpoint(1)
        let added = try await fixture.worker.addEndpoint(one)
        #expect(added.state == .plugged)
        #expect(added.port == 1)
        #expect(fixture.lab.with { $0.taps[one.tapName] } == one.macAddress)
        let plug = try #require(fixture.lab.plugs(onTap: one.tapName).first)
        #expect(added.plugPID == plug.pid)
        #expect(plug.isWatchingTap)
        // Kept until Join: the supervisor may not record the endpoint.
        #expect(exists(fixture.paths.creatingDir + "/\(one.tapName)"))
        _ = try await fixture.worker.joinEndpoint(one.endpointID, sandboxKey: "/run/netns/fake1")
        #expect(!exists(fixture.paths.creatingDir + "/\(one.tapName)"))
        await fixture.cleanUp()
        #expect(plug.hasExited)
        #expect(fixture.lab.runningSwitch == nil)
    }

    @Test func aCrashedPlugIsRestartedOnItsTap() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        let first = try #require(fixture.lab.plugs.first)
        first.exit()
        let exited = try await fixture.event(.childExited) { $0.child == .plug }
        #expect(exited.pid == first.pid)
        let restarted = try await fixture.event(.childRestarted) { $0.child == .plug }
        let second = try #require(fixture.lab.plugs.last)
        #expect(restarted.pid == second.pid)
        #expect(second !== first)
        #expect(second.location == .host(tapName: one.tapName))
        // The dead plug's watch let go of the tap before the new plug took it.
        #expect(!first.isWatchingTap)
        #expect(second.isWatchingTap)
        #expect(await fixture.worker.sortedStatuses().first?.state == .plugged)
        await fixture.cleanUp()
    }

    @Test func aVanishedTapStopsItsPlugAndIsNotReplugged() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        let plug = try #require(fixture.lab.plugs.first)
        plug.vanishTap()
        let gone = try await fixture.event(.tapGone)
        #expect(gone.endpointID == one.endpointID)
        #expect(gone.pid == plug.pid)
        try await eventually("the plug stopped") { plug.hasExited }
        let status = await fixture.worker.sortedStatuses()
        #expect(status.first?.state == .tapGone)
        #expect(status.first?.plugPID == nil)
        #expect(fixture.lab.plugs.count == 1, "no plug is started for a gone tap")
        #expect(!fixture.allEvents.contains { $0.kind == .childRestarted })
        await fixture.cleanUp()
    }

    @Test func aCrashedSwitchIsRestartedAndEveryEndpointReplugged() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        for n in 1...2 { _ = try await fixture.worker.addEndpoint(fixture.endpoint(n)) }
        let firstSwitch = try #require(fixture.lab.runningSwitch)
        let firstPlugs = fixture.lab.plugs
        firstSwitch.exit()
        _ = try await fixture.event(.childExited) { $0.child == .switch && $0.pid == firstSwitch.pid }
        let restarted = try await fixture.event(.childRestarted) { $0.child == .switch }
        #expect(fixture.lab.switchStarts == 2)
        #expect(restarted.detail == "re-attached 2 of 2 endpoints")
        #expect(firstPlugs.allSatisfy { $0.hasExited && !$0.isWatchingTap })
        let statuses = await fixture.worker.sortedStatuses()
        #expect(statuses.count == 2)
        #expect(statuses.allSatisfy { $0.state == .plugged })
        #expect(Set(statuses.compactMap(\.plugPID)).isDisjoint(with: firstPlugs.map(\.pid)))
        await fixture.cleanUp()
    }

    @Test func aRemovedEndpointsTapIsMarkedUntilItIsDeleted() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        fixture.lab.with { $0.holdDeletions = true }
        _ = try await fixture.worker.removeEndpoint(one.endpointID)
        // Answered while the deletion still runs: the marker says so to a next worker.
        let marker = fixture.paths.deletingDir + "/\(one.tapName)"
        #expect(exists(marker))
        #expect(fixture.lab.with { $0.taps[one.tapName] } != nil)
        #expect(await fixture.worker.sortedStatuses().isEmpty)
        fixture.lab.releaseDeletions()
        await fixture.worker.waitForTapDeletion(one.tapName)
        #expect(fixture.lab.with { $0.taps[one.tapName] } == nil)
        #expect(!exists(marker))
        await fixture.cleanUp()
    }

    @Test func aNewWorkerDeletesMarkedTapsButKeepsThoseItRestores() async throws {
        let fixture = FakeWorkerFixture()
        let removed = fixture.endpoint(1)
        let kept = fixture.endpoint(2)
        let unrecorded = fixture.endpoint(3)
        // What a worker killed during a deletion and during an add leaves behind.
        fixture.lab.with { state in
            for endpoint in [removed, kept, unrecorded] { state.taps[endpoint.tapName] = endpoint.macAddress }
        }
        let paths = fixture.paths
        for (directory, tap) in [
            (paths.deletingDir, removed.tapName), (paths.deletingDir, kept.tapName),
            (paths.creatingDir, unrecorded.tapName),
        ] {
            mkdir(paths.networkDir, 0o755)
            mkdir(directory, 0o755)
            close(open(directory + "/\(tap)", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        let result = try await started(fixture, restoring: [kept])
        #expect(result.endpoints.map(\.endpointID) == [kept.endpointID])
        #expect(fixture.lab.with { $0.deletedTaps }.sorted() == [removed.tapName, unrecorded.tapName].sorted())
        #expect(!exists(fixture.paths.deletingDir + "/\(kept.tapName)"))
        _ = try await fixture.event(.endpointState) { $0.endpointID == kept.endpointID && $0.state == .plugged }
        #expect(fixture.lab.plugs(onTap: kept.tapName).count == 1)
        await fixture.cleanUp()
    }

    /// A switch the worker starts has the ports its command line gave it: the management
    /// socket is not asked (one round trip less in CreateNetwork).
    @Test func aSwitchStartedNowIsNotAskedForItsPorts() async throws {
        let fixture = FakeWorkerFixture()
        fixture.lab.with { $0.capacity = 5 }
        let result = try await started(fixture)
        #expect(result.switch.numPorts == 5)
        #expect(fixture.lab.with { $0.usablePortsAsked } == 0)
        // The next worker adopts the running switch: that one is asked.
        fixture.lab.leaveRunning([:])
        let next = FakeWorkerFixture(lab: fixture.lab)
        let adopted = try await started(next)
        #expect(adopted.switch.numPorts == 5)
        #expect(fixture.lab.with { $0.usablePortsAsked } == 1)
        #expect(fixture.lab.switchStarts == 1, "the switch was adopted, not started again")
        await next.cleanUp()
    }

    @Test func aFullSwitchRefusesAnotherEndpointAndItsTapGoes() async throws {
        let fixture = FakeWorkerFixture()
        fixture.lab.with { $0.capacity = 1 }
        _ = try await started(fixture)
        _ = try await fixture.worker.addEndpoint(fixture.endpoint(1))
        let two = fixture.endpoint(2)
        let error = await #expect(throws: PlugError.self) { try await fixture.worker.addEndpoint(two) }
        #expect(error?.vdeError.code == .exhausted)
        #expect(error?.description.contains("num_switchports") == true)
        #expect(fixture.lab.with { $0.taps[two.tapName] } == nil)
        #expect(fixture.lab.plugs.count == 1, "no plug is started on a full switch")
        await fixture.cleanUp()
    }

    @Test func aPlugReplacedAfterItsContainerWentIsReportedGone() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let key: SandboxKey = "/run/netns/fake-gone"
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        _ = try await fixture.worker.joinEndpoint(one.endpointID, sandboxKey: key)
        // dockerd moved the tap into the container, which is then removed with its namespace.
        fixture.lab.with { state in state.taps[one.tapName] = nil }
        try #require(fixture.lab.plugs.first).exit()
        let gone = try await fixture.event(.endpointState) { $0.state == .tapGone }
        #expect(gone.endpointID == one.endpointID)
        #expect(gone.detail?.contains(key.rawValue) == true)
        #expect(fixture.lab.plugs.count == 1, "no plug is started for a container that is gone")
        await fixture.cleanUp()
    }

    @Test func aContainerThatCannotBeLookedIntoIsUnreachableNotGone() async throws {
        let fixture = FakeWorkerFixture()
        let key: SandboxKey = "/run/netns/fake-unknown"
        fixture.lab.with { $0.sandboxes[key] = .cannotCheck(errno: EACCES) }
        let one = fixture.endpoint(1, sandboxKey: key)
        _ = try await fixture.worker.start(spec: fixture.spec, restoring: [one])
        let unreachable = try await fixture.event(.endpointState) { $0.endpointID == one.endpointID }
        #expect(unreachable.state == .unreachable)
        // Once it can look, it finds the link by its MAC and plugs it inside the namespace.
        fixture.lab.with { state in
            state.sandboxes[key] = .namespace
            state.links[key] = [LinkInfo(name: "eth0", macAddress: one.macAddress)]
        }
        _ = try await fixture.event(.endpointState) { $0.endpointID == one.endpointID && $0.state == .plugged }
        #expect(fixture.lab.plugs.last?.location == .sandbox(path: key, interface: "eth0"))
        await fixture.cleanUp()
    }

    @Test func leaveStopsThePlugForGoodAndJoinPlugsTheTapAgain() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        let first = try #require(fixture.lab.plugs.first)
        let left = try await fixture.worker.leaveEndpoint(one.endpointID)
        #expect(left.state == .unplugged)
        #expect(first.hasExited && !first.isWatchingTap)
        // A plug stopped on purpose is no crash: nothing restarts it.
        #expect(!fixture.allEvents.contains { $0.kind == .childExited || $0.kind == .childRestarted })
        #expect(fixture.lab.plugs.count == 1)
        let joined = try await fixture.worker.joinEndpoint(one.endpointID, sandboxKey: "/run/netns/fake2")
        #expect(joined.state == .plugged)
        #expect(fixture.lab.plugs.count == 2)
        #expect(fixture.lab.plugs.last?.location == .host(tapName: one.tapName))
        await fixture.cleanUp()
    }

    @Test func aPlugThatCannotAttachIsRetriedUntilItCan() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        fixture.lab.with {
            $0.plugFailure = .notAttached(pid: 0, ctlDir: "fake", waited: .zero, cause: "the fake switch is stuck")
        }
        try #require(fixture.lab.plugs.first).exit()
        // The fake records the new plug before its attach fails: wait for the worker's report.
        let failed = try await eventually("a failed re-plug reported") { () async -> EndpointStatus? in
            let status = await fixture.worker.sortedStatuses().first
            return status?.detail?.contains("the fake switch is stuck") == true ? status : nil
        }
        #expect(fixture.lab.plugs.count >= 2)
        #expect(failed.state == .restarting)
        fixture.lab.with { $0.plugFailure = nil }
        _ = try await fixture.event(.childRestarted) { $0.child == .plug }
        #expect(await fixture.worker.sortedStatuses().first?.state == .plugged)
        await fixture.cleanUp()
    }

    @Test func anEndpointAddedAgainIsTheSameAndAnotherOnItsTapIsRefused() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let one = fixture.endpoint(1)
        let first = try await fixture.worker.addEndpoint(one)
        let again = try await fixture.worker.addEndpoint(one)
        #expect(again == first)
        #expect(fixture.lab.plugs.count == 1)
        var other = fixture.endpoint(2)
        other.tapName = one.tapName
        await #expect(throws: VDEError.self) { try await fixture.worker.addEndpoint(other) }
        #expect(fixture.lab.with { $0.taps[one.tapName] } == one.macAddress)
        await fixture.cleanUp()
    }

    @Test func shutdownStopsEverythingAndLeavesNoDirectory() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        for n in 1...2 {
            let endpoint = fixture.endpoint(n)
            _ = try await fixture.worker.addEndpoint(endpoint)
            _ = try await fixture.worker.joinEndpoint(
                endpoint.endpointID, sandboxKey: SandboxKey("/run/netns/fake\(n)"))
        }
        #expect(exists(fixture.paths.ctlDir))
        let theSwitch = try #require(fixture.lab.runningSwitch)
        await fixture.worker.shutdown(reason: "test")
        #expect(fixture.lab.plugs.allSatisfy { $0.hasExited && !$0.isWatchingTap })
        #expect(theSwitch.hasExited)
        #expect(!exists(fixture.paths.networkDir))
        // Taps stay: they live on in the containers (dockerd removes them).
        #expect(fixture.lab.with { $0.deletedTaps }.isEmpty)
        #expect(!fixture.allEvents.contains { $0.kind == .childExited })
        await fixture.cleanUp()
    }

    @Test func withoutAWatchTheTapIsPolledAndTheOtherTapsAreNot() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await started(fixture)
        let watched = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(watched)
        fixture.lab.with { $0.watchUnavailable = true }
        let polled = fixture.endpoint(2)
        _ = try await fixture.worker.addEndpoint(polled)
        #expect(await fixture.worker.tapPollTask != nil)
        // Both plugs' /proc would say "detached"; only the unwatched one is looked at.
        fixture.lab.with { $0.tapAttachment = .detached }
        let gone = try await fixture.event(.tapGone)
        #expect(gone.endpointID == polled.endpointID)
        // With no unwatched plug left, the polling ends.
        try await eventually("the polling ended", timeout: .seconds(3)) { await fixture.worker.tapPollTask == nil }
        #expect(await fixture.worker.sortedStatuses().first { $0.endpointID == watched.endpointID }?.state == .plugged)
        await fixture.cleanUp()
    }
}
