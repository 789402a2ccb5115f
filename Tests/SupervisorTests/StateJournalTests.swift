import Glibc
import Shared
import Testing

@testable import vde_supervisor

// MARK: Helpers

/// A fresh directory under /tmp, removed with everything in it when `body` returns.
private func withDirectory(_ body: (String) throws -> Void) throws {
    var template = Array("/tmp/vde-journal-test-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { $0.baseAddress.flatMap { mkdtemp($0) } }
    try #require(made != nil, "mkdtemp failed")
    let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    defer { removeTree(path) }
    try body(path)
}

private func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT == S_IFDIR {
        for name in FileSystem.listDirectory(path) ?? [] { removeTree(path + "/" + name) }
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// Copies the regular files of `source` into a new directory `target`: what a crash (of the
/// process: the page cache survives) would leave at this moment.
private func copyDirectory(_ source: String, to target: String) throws {
    _ = try FileSystem.makeDirectories(target, mode: 0o700)
    for name in FileSystem.listDirectory(source) ?? [] where FileSystem.isRegularFile(source + "/" + name) {
        try FileSystem.write(
            try FileSystem.read(source + "/" + name, limit: .max), to: target + "/" + name, mode: 0o600)
    }
}

private func append(_ bytes: [UInt8], to path: String) throws {
    let fd = open(path, O_WRONLY | O_APPEND)
    try #require(fd >= 0)
    defer { close(fd) }
    try FileSystem.writeAll(bytes, to: fd)
}

private func storeError(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void)
    -> StateStoreError?
{
    do {
        try body()
        Issue.record("expected a StateStoreError, the call succeeded", sourceLocation: sourceLocation)
    } catch let error as StateStoreError {
        return error
    } catch {
        Issue.record("not a StateStoreError: \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// A series of states as the plugin makes them: pools requested and released through the IPAM
/// driver, networks created, endpoints added and removed, networks deleted.
private enum Script {
    static func networkID(_ n: Int) throws -> NetworkID {
        try NetworkID(String(repeating: String(n % 10), count: 64))
    }

    static func endpointID(_ n: Int) throws -> EndpointID {
        try EndpointID(String(repeating: "e", count: 60) + String(format4(n)))
    }

    private static func format4(_ n: Int) -> String {
        let text = String(n)
        return String(repeating: "0", count: 4 - text.count) + text
    }

    static func createNetwork(_ n: Int, in state: inout SupervisorState) throws {
        let id = try networkID(n)
        let subnet = "10.\(n).0.0/24"
        _ = try state.ipam.requestPool(DockerAPI.RequestPoolRequest(Pool: subnet), now: 1)
        let bound = state.ipam.bindPool(subnet: subnet, networkID: id)
        let poolID = try #require(bound)
        let spec = try SwitchSpec(
            paths: NetworkPaths(runDir: "/run/x", network: id, options: NetworkOptions()), mode: .own, group: nil,
            numPorts: 8)
        state.networks[id] = NetworkRecord(
            id: id, options: NetworkOptions(), switchSpec: spec, switchStarted: true, ipv4Data: [], ipv6Data: [],
            poolIDs: [poolID], createdAt: Int64(n))
    }

    static func addEndpoint(_ e: Int, to n: Int, in state: inout SupervisorState) throws {
        let id = try networkID(n)
        let poolID = try #require(state.networks[id]?.poolIDs.first)
        let address = try state.ipam.requestAddress(DockerAPI.RequestAddressRequest(PoolID: poolID)).Address
        let endpoint = try endpointID(e)
        state.networks[id]?.endpoints[endpoint] = EndpointRecord(
            id: endpoint, networkID: id, tapName: TapName(endpoint: endpoint), macAddress: "02:00:00:00:00:01",
            macGenerated: true, address: address)
    }

    static func removeEndpoint(_ e: Int, from n: Int, in state: inout SupervisorState) throws {
        let id = try networkID(n)
        let endpoint = try #require(state.networks[id]?.endpoints.removeValue(forKey: try endpointID(e)))
        let poolID = try #require(state.networks[id]?.poolIDs.first)
        try state.ipam.releaseAddress(
            DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: NetworkRecord.stripPrefix(endpoint.address ?? "")))
    }

    static func deleteNetwork(_ n: Int, in state: inout SupervisorState) throws {
        let record = try #require(state.networks.removeValue(forKey: try networkID(n)))
        for poolID in record.poolIDs { try state.ipam.releasePool(id: poolID) }
    }

    /// The states after each step, starting from an empty one (not included).
    static func states() throws -> [SupervisorState] {
        var state = SupervisorState()
        var out: [SupervisorState] = []
        let steps: [(inout SupervisorState) throws -> Void] = [
            { try createNetwork(1, in: &$0) },
            { try createNetwork(2, in: &$0) },
            { try addEndpoint(1, to: 1, in: &$0) },
            { try createNetwork(3, in: &$0) },
            { try addEndpoint(2, to: 2, in: &$0) },
            { try removeEndpoint(1, from: 1, in: &$0) },
            { try deleteNetwork(2, in: &$0) },
            { try addEndpoint(3, to: 3, in: &$0) },
            { try createNetwork(4, in: &$0) },
            { try deleteNetwork(1, in: &$0) },
        ]
        for step in steps {
            try step(&state)
            out.append(state)
        }
        return out
    }
}

// MARK: Tests

@Suite struct StateJournalTests {
    @Test func commitsRoundTripThroughTheJournal() throws {
        try withDirectory { dir in
            let store = JournaledStateStore(directory: dir)
            var current = try store.open()
            #expect(current == SupervisorState())
            #expect(try JournaledStateStore.read(directory: dir) == nil, "a new state directory holds no state")
            for next in try Script.states() {
                try store.commit(from: current, to: next)
                current = next
                #expect(try JournaledStateStore.read(directory: dir) == next)
            }
            #expect(store.sequence == 10)
            #expect(!FileSystem.exists(store.snapshotPath), "no compaction at this size")
            let reopened = JournaledStateStore(directory: dir)
            #expect(try reopened.open() == current)
            #expect(reopened.sequence == 10)
        }
    }

    @Test func aCommitWithoutChangesWritesNothing() throws {
        try withDirectory { dir in
            let store = JournaledStateStore(directory: dir)
            let state = try Script.states()[2]
            try store.commit(from: SupervisorState(), to: state)
            let size = try FileSystem.read(store.journalPath, limit: .max).count
            try store.commit(from: state, to: state)
            #expect(try FileSystem.read(store.journalPath, limit: .max).count == size)
            #expect(store.sequence == 1)
        }
    }

    /// The record holds only what changed: one network, one pool, and not the others.
    @Test func aRecordHoldsOnlyTheChangedUnits() throws {
        let states = try Script.states()
        let change = StateChange.between(states[3], states[4])  // an endpoint added to network 2
        #expect(change.networks.map(\.id) == [try Script.networkID(2)])
        #expect(change.pools.map(\.id) == [states[4].networks[try Script.networkID(2)]?.poolIDs.first])
        #expect(change.nextPoolNumber == nil)
        #expect(change.poolOrder == nil)
        let deletion = StateChange.between(states[5], states[6])  // network 2 and its pool deleted
        #expect(deletion.networks == [StateChange.NetworkChange(id: try Script.networkID(2), record: nil)])
        #expect(deletion.pools.map(\.pool) == [nil])
    }

    /// Pools keep their creation order through replay, also when one in the middle changes or goes.
    @Test func poolOrderSurvivesReplay() throws {
        try withDirectory { dir in
            var state = SupervisorState()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            for subnet in ["10.9.1.0/24", "10.9.2.0/24", "10.9.3.0/24"] {
                var next = state
                _ = try next.ipam.requestPool(DockerAPI.RequestPoolRequest(Pool: subnet), now: 1)
                try store.commit(from: state, to: next)
                state = next
            }
            var next = state
            _ = next.ipam.bindPool(subnet: "10.9.1.0/24", networkID: try Script.networkID(1))
            try next.ipam.releasePool(id: "vde-pool-2")
            _ = try next.ipam.requestPool(DockerAPI.RequestPoolRequest(Pool: "10.9.4.0/24"), now: 1)
            try store.commit(from: state, to: next)
            let reloaded = try #require(try JournaledStateStore.read(directory: dir))
            #expect(reloaded.ipam.pools.map(\.id) == ["vde-pool-1", "vde-pool-3", "vde-pool-4"])
            #expect(reloaded == next)
        }
    }

    /// Whatever IPAM calls did (pools changed in place, dropped, appended, or put in another
    /// order), the record's pools replay `old` into `new`; only a new order needs `poolOrder`.
    @Test func poolChangesReplayForEveryMixOfChangesDropsAppendsAndReorders() throws {
        var generator = SplitMix(seed: 17)
        for round in 0..<300 {
            var old = SupervisorState()
            let count = Int(generator.next() % 8)
            for index in 0..<count {
                _ = try old.ipam.requestPool(DockerAPI.RequestPoolRequest(Pool: "10.8.\(index).0/24"), now: 1)
            }
            var new = old
            for pool in new.ipam.pools where generator.next() % 3 == 0 {
                _ = try new.ipam.requestAddress(DockerAPI.RequestAddressRequest(PoolID: pool.id))
            }
            for pool in new.ipam.pools where generator.next() % 4 == 0 { try new.ipam.releasePool(id: pool.id) }
            for index in 0..<Int(generator.next() % 3) {
                _ = try new.ipam.requestPool(DockerAPI.RequestPoolRequest(Pool: "10.9.\(index).0/24"), now: 1)
            }
            let reorders = generator.next() % 5 == 0 && new.ipam.pools.count > 1
            if reorders {
                let reordered = new.ipam.reorderPools(by: new.ipam.pools.map(\.id).reversed())
                #expect(reordered)
            }
            let change = StateChange.between(old, new)
            var replayed = old
            try change.apply(to: &replayed)
            #expect(replayed == new, "round \(round)")
            if !reorders { #expect(change.poolOrder == nil, "round \(round): appends and drops keep the order") }
        }
    }

    /// Whatever a commit did to the networks (records changed in place, as every endpoint call
    /// does; networks added, deleted, or one deleted and another added, so that the counts
    /// match but the walk in order does not), the record replays `old` into `new` and holds
    /// exactly the networks that differ.
    @Test func networkChangesReplayForEveryMixOfChangesAddsAndDeletes() throws {
        var generator = SplitMix(seed: 23)
        for round in 0..<300 {
            var old = SupervisorState()
            // IDs 0 to 7 at first, 8 and 9 added later (Script's IDs repeat one digit).
            let count = Int(generator.next() % 8)
            for n in 0..<count { try Script.createNetwork(n, in: &old) }
            var new = old
            for (offset, id) in new.networks.keys.sorted().enumerated() where generator.next() % 3 == 0 {
                let endpoint = try Script.endpointID(offset)
                new.networks[id]?.endpoints[endpoint] = EndpointRecord(
                    id: endpoint, networkID: id, tapName: TapName(endpoint: endpoint),
                    macAddress: "02:00:00:00:00:02", macGenerated: true, address: nil)
            }
            for id in new.networks.keys.sorted() where generator.next() % 5 == 0 {
                new.networks.removeValue(forKey: id)
            }
            for n in 0..<Int(generator.next() % 3) { try Script.createNetwork(8 + n, in: &new) }
            let change = StateChange.between(old, new)
            var replayed = old
            try change.apply(to: &replayed)
            #expect(replayed == new, "round \(round)")
            let differing = Set(old.networks.keys).union(new.networks.keys)
                .filter { old.networks[$0] != new.networks[$0] }
            #expect(change.networks.map(\.id) == differing.sorted(), "round \(round): only what differs")
        }
    }

    /// An order that replacing and appending would not give is recorded whole.
    @Test func anUnusualPoolOrderIsRecordedWhole() throws {
        var old = SupervisorState()
        for subnet in ["10.9.1.0/24", "10.9.2.0/24"] {
            _ = try old.ipam.requestPool(DockerAPI.RequestPoolRequest(Pool: subnet), now: 1)
        }
        var new = old
        let reordered = new.ipam.reorderPools(by: ["vde-pool-2", "vde-pool-1"])
        #expect(reordered)
        let change = StateChange.between(old, new)
        #expect(change.poolOrder == ["vde-pool-2", "vde-pool-1"])
        var replayed = old
        try change.apply(to: &replayed)
        #expect(replayed == new)
    }

    @Test func aTornLastRecordIsDroppedAndCutOff() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            try store.commit(from: SupervisorState(), to: states[0])
            try store.commit(from: states[0], to: states[1])
            // The next record, cut short by a crash before its sync (never confirmed).
            var torn = StateChange.between(states[1], states[2])
            torn.sequence = 3
            let line = try StateJournal.frame(torn)
            try append(Array(line.prefix(line.count / 2)), to: store.journalPath)
            #expect(try JournaledStateStore.read(directory: dir) == states[1])
            // Opening cuts it off, so the next record follows a whole one.
            let reopened = JournaledStateStore(directory: dir)
            #expect(try reopened.open() == states[1])
            try reopened.commit(from: states[1], to: states[2])
            #expect(try JournaledStateStore.read(directory: dir) == states[2])
            // A whole last line whose checksum fails is the same case.
            var bad = try StateJournal.frame(StateChange.between(states[2], states[3]))
            bad[0] = bad[0] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
            try append(bad, to: store.journalPath)
            #expect(try JournaledStateStore.read(directory: dir) == states[2])
        }
    }

    @Test func aDamagedRecordBeforeTheEndIsAClearError() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            var current = SupervisorState()
            for next in states.prefix(3) {
                try store.commit(from: current, to: next)
                current = next
            }
            var bytes = try FileSystem.read(store.journalPath, limit: .max)
            let secondLine = try #require(bytes.firstIndex(of: UInt8(ascii: "\n"))) + 1
            bytes[secondLine + 20] ^= 0x01
            try FileSystem.write(bytes, to: store.journalPath, mode: 0o600)
            let error = storeError { _ = try JournaledStateStore.read(directory: dir) }
            guard case .journalCorrupt(let path, let line, let offset, _) = error else {
                Issue.record("expected journalCorrupt, got \(String(describing: error))")
                return
            }
            #expect(path == store.journalPath)
            #expect(line == 2)
            #expect(offset == secondLine)
            let message = try #require(error).vdeError.message
            #expect(message.contains("head -c \(secondLine) \(store.journalPath).broken > \(store.journalPath)"))
            #expect(message.contains("not a write cut short by a crash"))
            // What the message says to do works: the records before the damage remain.
            try FileSystem.write(Array(bytes.prefix(secondLine)), to: store.journalPath, mode: 0o600)
            #expect(try JournaledStateStore.read(directory: dir) == states[0])
        }
    }

    /// A crash after each step of every append leaves the state before the commit or after it,
    /// and after it once the record is synced; the directory then goes on working.
    @Test func aCrashDuringAnAppendLosesNothingConfirmed() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir + "/live")
            var images: [(JournalStep, String, SupervisorState, SupervisorState)] = []
            var current = try store.open()
            for (index, next) in states.enumerated() {
                store.onStep = { step in
                    let image = "\(dir)/image-\(index)-\(step.rawValue)"
                    try? copyDirectory(dir + "/live", to: image)
                    images.append((step, image, current, next))
                }
                try store.commit(from: current, to: next)
                current = next
            }
            #expect(Set(images.map(\.0)).isSuperset(of: [.recordWritten, .recordSynced, .journalCreated]))
            for (step, image, before, after) in images {
                let reopened = JournaledStateStore(directory: image)
                let loaded = try reopened.open()
                switch step {
                case .journalCreated, .directorySynced: #expect(loaded == before, "\(image): no record yet")
                case .recordWritten: #expect(loaded == before || loaded == after, "\(image)")
                default: #expect(loaded == after, "\(image): a synced record is confirmed")
                }
                // Going on from there keeps every later commit.
                let further = try Script.states()[9]
                try reopened.commit(from: loaded, to: further)
                #expect(try JournaledStateStore.read(directory: image) == further, "\(image)")
            }
        }
    }

    /// A crash after each step of a compaction loses nothing and applies nothing twice.
    @Test func aCrashDuringACompactionLosesNothing() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir + "/live")
            store.compactionFloor = 1  // compact whenever the journal outgrows the snapshot
            var images: [(JournalStep, String, SupervisorState)] = []
            var current = try store.open()
            for (index, next) in states.enumerated() {
                var compacting = false
                store.onStep = { step in
                    compacting = compacting || step == .snapshotSaved
                    guard compacting else { return }
                    let image = "\(dir)/image-\(index)-\(step.rawValue)"
                    try? copyDirectory(dir + "/live", to: image)
                    images.append((step, image, next))
                }
                try store.commit(from: current, to: next)
                current = next
            }
            #expect(store.compactions >= 2)
            let compactionSteps: Set<JournalStep> = [
                .snapshotSaved, .journalRetired, .journalCreated, .directorySynced,
            ]
            #expect(Set(images.map(\.0)) == compactionSteps)
            for (_, image, after) in images {
                let reopened = JournaledStateStore(directory: image)
                reopened.compactionFloor = 1
                let loaded = try reopened.open()
                #expect(loaded == after, "\(image)")
                var state = loaded
                for next in states.reversed() {  // undoing it all, step by step, through more compactions
                    try reopened.commit(from: state, to: next)
                    state = next
                    #expect(try JournaledStateStore.read(directory: image) == next, "\(image)")
                }
            }
        }
    }

    @Test func theJournalIsCompactedWhenItOutgrowsTheSnapshot() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            store.compactionFloor = 4096
            var current = try store.open()
            for round in 0..<20 {
                for next in (round % 2 == 0 ? states : states.reversed()) {
                    try store.commit(from: current, to: next)
                    current = next
                }
            }
            #expect(store.compactions > 0)
            #expect(store.journalBytes <= max(store.snapshotBytes, 4096) + 4096)
            #expect(FileSystem.isRegularFile(store.previousJournalPath))
            #expect(try JournaledStateStore.read(directory: dir) == current)
            // The snapshot says which records it includes; the previous release ignores the key.
            let text = FileSystem.readFile(store.snapshotPath, limit: 1 << 20) ?? ""
            #expect(text.contains("\"journalSequence\""))
            let asBefore = try JSONCoding.decode(
                SupervisorState.self, from: try FileSystem.read(store.snapshotPath, limit: .max))
            #expect(asBefore.version == SupervisorState.currentVersion)
        }
    }

    /// A state directory of a release before the journal (state.json alone) loads unchanged;
    /// the snapshot is written again with its sequence, and a journal left from before it
    /// (a downgrade and back) is ignored.
    @Test func aStateDirectoryOfTheReleaseBeforeLoadsUnchanged() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let old = states[4]
            try FileSystem.write(
                try JSONCoding.encodePretty(old) + [UInt8(ascii: "\n")], to: dir + "/state.json", mode: 0o600)
            // A journal from before that state.json was written by the older release.
            var stale = StateChange.between(SupervisorState(), states[9])
            stale.sequence = 1
            try FileSystem.write(try StateJournal.frame(stale), to: dir + "/state.journal", mode: 0o600)
            #expect(try JournaledStateStore.read(directory: dir) == old)
            let store = JournaledStateStore(directory: dir)
            #expect(try store.open() == old)
            #expect(try FileSystem.read(dir + "/state.journal", limit: .max).isEmpty, "the stale journal is replaced")
            try store.commit(from: old, to: states[5])
            #expect(try JournaledStateStore.read(directory: dir) == states[5])
        }
    }

    /// A snapshot restored from state.json.1 (what StateStoreError.corrupt advises) is brought
    /// up to date through state.journal.1; without that file the gap is a clear error.
    @Test func anOlderSnapshotIsReplayedThroughThePreviousJournal() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            store.compactionFloor = 1
            var current = try store.open()
            for next in states {
                try store.commit(from: current, to: next)
                current = next
            }
            #expect(store.compactions >= 2)
            store.compactionFloor = 1 << 30  // one more record, kept in the journal
            try store.commit(from: current, to: states[0])
            current = states[0]
            try FileSystem.write(
                try FileSystem.read(dir + "/state.json.1", limit: .max), to: dir + "/state.json", mode: 0o600)
            #expect(try JournaledStateStore.read(directory: dir) == current)
            #expect(unlink(dir + "/state.journal.1") == 0)
            let error = storeError { _ = try JournaledStateStore.read(directory: dir) }
            guard case .journalGap = error else {
                Issue.record("expected journalGap, got \(String(describing: error))")
                return
            }
            #expect(try #require(error).vdeError.message.contains("older copy"))
        }
    }

    /// A failed sync refuses the change: the journal is cut back, the stored state is the old
    /// one, the error says what to do, and the next commit works.
    @Test func aFailedAppendLeavesTheStoredStateAsItWas() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            try store.commit(from: SupervisorState(), to: states[0])
            let size = try FileSystem.read(store.journalPath, limit: .max).count
            var failures = 1
            store.syncData = { fd in
                if failures > 0 {
                    failures -= 1
                    errno = EIO
                    return -1
                }
                return fdatasync(fd)
            }
            let error = storeError { try store.commit(from: states[0], to: states[1]) }
            #expect(error == .journalWrite(path: store.journalPath, step: "fdatasync", errno: EIO, undone: true))
            let message = try #require(error).vdeError.message
            #expect(message.contains("the change was refused and the stored state is as before"))
            #expect(message.contains("Check free space"))
            #expect(try FileSystem.read(store.journalPath, limit: .max).count == size)
            #expect(try JournaledStateStore.read(directory: dir) == states[0])
            #expect(store.sequence == 1)
            try store.commit(from: states[0], to: states[1])
            #expect(try JournaledStateStore.read(directory: dir) == states[1])
        }
    }

    /// When even the undo fails, the journal may end in a record nobody confirmed: the next
    /// commit writes a snapshot first and replaces the journal, so that record never counts.
    @Test func aFailedUndoIsRepairedByTheNextCommit() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            try store.commit(from: SupervisorState(), to: states[0])
            var failures = 2  // the sync of the record and the sync of the undo
            store.syncData = { fd in
                if failures > 0 {
                    failures -= 1
                    errno = EIO
                    return -1
                }
                return fdatasync(fd)
            }
            let error = storeError { try store.commit(from: states[0], to: states[1]) }
            #expect(error == .journalWrite(path: store.journalPath, step: "fdatasync", errno: EIO, undone: false))
            #expect(try #require(error).vdeError.message.contains("the next change rewrites the state file first"))
            try store.commit(from: states[0], to: states[2])
            #expect(store.compactions == 1)
            #expect(try JournaledStateStore.read(directory: dir) == states[2])
        }
    }

    /// A record committed with `.syncLater` is in the file at once (a new process reads it)
    /// but not synced until `syncDeferred`, or until a later commit's sync, which covers it.
    @Test func aRecordToSyncLaterIsWrittenAtOnceAndSyncedOnce() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            var syncs = 0
            store.syncData = { fd in
                syncs += 1
                return fdatasync(fd)
            }
            try store.commit(from: SupervisorState(), to: states[0], durability: .syncLater)
            #expect(syncs == 0)
            #expect(store.hasUnsyncedRecords)
            #expect(try JournaledStateStore.read(directory: dir) == states[0])
            try store.syncDeferred()
            #expect(syncs == 1)
            #expect(!store.hasUnsyncedRecords)
            try store.syncDeferred()
            #expect(syncs == 1, "nothing left to sync")

            try store.commit(from: states[0], to: states[1], durability: .syncLater)
            try store.commit(from: states[1], to: states[2])
            #expect(syncs == 2, "the second commit's sync covers the first record")
            #expect(!store.hasUnsyncedRecords)
            try store.syncDeferred()
            #expect(syncs == 2)
            #expect(try JournaledStateStore.read(directory: dir) == states[2])
        }
    }

    /// A deferred sync that fails cannot refuse what was confirmed: it says so, and the next
    /// commit writes the whole state as the snapshot before it appends.
    @Test func aFailedDeferredSyncIsRepairedByTheNextCommit() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            try store.commit(from: SupervisorState(), to: states[0])
            try store.commit(from: states[0], to: states[1], durability: .syncLater)
            store.syncData = { _ in
                errno = EIO
                return -1
            }
            let error = storeError { try store.syncDeferred() }
            #expect(error == .deferredSync(path: store.journalPath, errno: EIO))
            let message = try #require(error).vdeError.message
            #expect(message.contains("the next change rewrites the state file first"))
            #expect(message.contains("Check the disk"))
            store.syncData = { fdatasync($0) }
            try store.commit(from: states[1], to: states[2])
            #expect(store.compactions == 1)
            let snapshot = try #require(try StateStore<StateSnapshot>(directory: dir).load())
            #expect(snapshot.state == states[1], "the snapshot holds the change whose sync failed")
            #expect(try JournaledStateStore.read(directory: dir) == states[2])
        }
    }

    /// A journal whose directory cannot be synced is not appended to.
    @Test func aFailedDirectorySyncRefusesTheFirstAppend() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            _ = try store.open()
            store.syncDirectory = { _ in
                errno = EIO
                return -1
            }
            let error = storeError { try store.commit(from: SupervisorState(), to: states[0]) }
            #expect(error == .journalWrite(path: store.journalPath, step: "directory fsync", errno: EIO, undone: true))
            // The journal was made (empty) but holds no record.
            #expect((try JournaledStateStore.read(directory: dir) ?? SupervisorState()) == SupervisorState())
            store.syncDirectory = { fsync($0) }
            try store.commit(from: SupervisorState(), to: states[0])
            #expect(try JournaledStateStore.read(directory: dir) == states[0])
        }
    }

    /// After a checkpoint (a clean stop) state.json alone holds the state, as the release
    /// before the journal reads it.
    @Test func aCheckpointLeavesTheWholeStateInTheSnapshot() throws {
        try withDirectory { dir in
            let states = try Script.states()
            let store = JournaledStateStore(directory: dir)
            var current = try store.open()
            for next in states.prefix(5) {
                try store.commit(from: current, to: next)
                current = next
            }
            try store.checkpoint(current)
            #expect(try StateStore<SupervisorState>(directory: dir).load() == current)
            #expect(try FileSystem.read(store.journalPath, limit: .max).isEmpty)
            #expect(try JournaledStateStore.read(directory: dir) == current)
            let compactions = store.compactions
            try store.checkpoint(current)
            #expect(store.compactions == compactions, "nothing to compact")
        }
    }

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }
}

/// A small deterministic generator (SplitMix64), so that a failing round can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
