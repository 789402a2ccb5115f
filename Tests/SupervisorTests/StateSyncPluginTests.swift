import Glibc
import Shared
import Synchronization
import Testing

@testable import vde_supervisor

extension VDEPlugin {
    func replaceStateSync(_ sync: @escaping @Sendable (Int32) -> Int32) { store.syncData = sync }
    var stateHasUnsyncedRecords: Bool { store.hasUnsyncedRecords }
}

/// When the plugin's state records are synced relative to its replies
/// (docs/architecture.md, "State"): an IPAM change is written before its reply and synced just
/// after it; DeleteNetwork syncs while its worker stops, and replies after both.
@Suite struct StateSyncPluginTests {
    /// A sync that waits (up to 10 s) until `released` says so; records that it started.
    final class HeldSync: Sendable {
        let started = Mutex(0)
        let ended = Mutex(0)
        let released = Mutex(false)
        /// Evaluated while the sync waits; true ends the wait.
        let releaseWhen: @Sendable () -> Bool

        init(releaseWhen: @escaping @Sendable () -> Bool = { false }) { self.releaseWhen = releaseWhen }

        func sync(_ fd: Int32) -> Int32 {
            started.withLock { $0 += 1 }
            let deadline = ContinuousClock.now + .seconds(10)
            while !released.withLock({ $0 }) && !releaseWhen() && ContinuousClock.now < deadline {
                usleep(1000)
            }
            defer { ended.withLock { $0 += 1 } }
            return fdatasync(fd)
        }
    }

    /// The pool is in the journal when RequestPool returns, while the sync of it has started and
    /// not ended (it waits for the test); then it ends on its own.
    @Test func anIPAMChangeIsWrittenBeforeItsReplyAndSyncedAfterIt() async throws {
        let worker = StandInWorker(name: "ipam-sync")
        defer { worker.remove() }
        let plugin = try worker.plugin(cases: "")
        let held = HeldSync()
        await plugin.replaceStateSync { held.sync($0) }

        let response = try await plugin.requestPool(
            DockerAPI.RequestPoolRequest(AddressSpace: VDEPlugin.localAddressSpace, Pool: "10.77.0.0/24"))
        #expect(held.ended.withLock { $0 } == 0, "the reply did not wait for the sync")
        let written = try #require(try JournaledStateStore.read(directory: worker.directory + "/state"))
        #expect(written.ipam.pools.contains { $0.id == response.PoolID }, "the record was written before the reply")

        // The sync holds the plugin's queue meanwhile: the plugin is asked only once it ended.
        held.released.withLock { $0 = true }
        let deadline = ContinuousClock.now + .seconds(10)
        while held.ended.withLock({ $0 }) == 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(held.started.withLock { $0 } == 1)
        #expect(!(await plugin.stateHasUnsyncedRecords), "the sync ran after the reply")
    }

    /// DeleteNetwork's record is synced while the worker stops: the worker has its `shutdown`
    /// before the sync ends, and the reply comes after both.
    @Test func deleteNetworkSyncsWhileItsWorkerStops() async throws {
        let worker = StandInWorker(name: "delete-sync")
        defer { worker.remove() }
        let plugin = try worker.plugin(cases: "")
        let id = "de1e" + String(repeating: "0", count: 60)
        try await plugin.createNetwork(id: id)

        let shutdownSeen = Mutex(false)
        let held = HeldSync(releaseWhen: {
            let seen = !worker.commands("shutdown").isEmpty
            if seen { shutdownSeen.withLock { $0 = true } }
            return seen
        })
        await plugin.replaceStateSync { held.sync($0) }
        _ = try await plugin.deleteNetwork(DockerAPI.NetworkRequest(NetworkID: try NetworkID(id)))
        #expect(held.started.withLock { $0 } == 1)
        #expect(shutdownSeen.withLock { $0 }, "the worker got its shutdown while the record was being synced")
        #expect(!(await plugin.stateHasUnsyncedRecords), "synced before the reply")
        #expect(
            try JournaledStateStore.read(directory: worker.directory + "/state")?.networks[try NetworkID(id)] == nil)
    }
}
