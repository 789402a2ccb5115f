import Shared

/// One record of the state journal: the full new value of every unit one commit changed.
///
/// The units are a network record (by NetworkID), an IPAM pool (by PoolID) and IPAM's
/// `nextPoolNumber`; a unit that is gone is recorded as a deletion (nil). One commit is one
/// record, so a change to several units (a network and its pool) is applied whole or not at all.
struct StateChange: Codable, Sendable, Equatable {
    /// The record's number: the first record after a snapshot covering `n` is `n + 1`.
    var sequence: UInt64
    /// Changed networks, by ID; nil: deleted.
    var networks: [NetworkChange] = []
    /// Changed pools, in the order of the new state's pool list; nil: deleted. A pool the state
    /// does not hold yet is appended, one it holds is replaced where it is: that is how the
    /// IPAM driver changes the list (new pools last), so replay gives the same order.
    var pools: [PoolChange] = []
    var nextPoolNumber: UInt64?
    /// The whole pool order, only when replacing and appending would not give it (no call does
    /// that today; the diff checks, so that replay can never reorder pools silently).
    var poolOrder: [String]?

    struct NetworkChange: Codable, Sendable, Equatable {
        var id: NetworkID
        var record: NetworkRecord?
    }

    struct PoolChange: Codable, Sendable, Equatable {
        var id: String
        var pool: AddressPool?
    }

    var isEmpty: Bool { networks.isEmpty && pools.isEmpty && nextPoolNumber == nil && poolOrder == nil }

    /// What changed from `old` to `new`, unit by unit (`sequence` 0: the journal numbers it).
    ///
    /// Costs one lookup and one comparison per network and per pool; a unit a commit did not
    /// touch still shares its storage with `old`, so comparing it mostly stops at the first
    /// field (strings and arrays compare by identity first).
    static func between(_ old: SupervisorState, _ new: SupervisorState) -> StateChange {
        var change = StateChange(sequence: 0)
        change.networks = networkChanges(old.networks, new.networks)
        change.networks.sort { $0.id < $1.id }
        guard old.ipam != new.ipam else { return change }
        if old.ipam.nextPoolNumber != new.ipam.nextPoolNumber { change.nextPoolNumber = new.ipam.nextPoolNumber }
        if let pools = Self.poolChangesKeepingOrder(old.ipam.pools, new.ipam.pools) {
            change.pools = pools
            return change
        }
        let oldPools = Dictionary(old.ipam.pools.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let newIDs = Set(new.ipam.pools.map(\.id))
        for pool in new.ipam.pools where oldPools[pool.id] != pool {
            change.pools.append(PoolChange(id: pool.id, pool: pool))
        }
        for pool in old.ipam.pools where !newIDs.contains(pool.id) {
            change.pools.append(PoolChange(id: pool.id, pool: nil))
        }
        var replayed = old.ipam
        change.applyPools(to: &replayed)
        if replayed.pools.map(\.id) != new.ipam.pools.map(\.id) { change.poolOrder = new.ipam.pools.map(\.id) }
        return change
    }

    /// The networks changed, added or deleted from `old` to `new`, in no particular order.
    ///
    /// A commit's `new` is a copy of `old` with records changed in place (every endpoint call),
    /// and a copied dictionary keeps its hash seed and buckets, so both hold the same IDs in the
    /// same order: then one walk of both compares them pair by pair, with no hashing. Otherwise
    /// (a network added or deleted) each ID is looked up. At 1000 networks the lookups, a hash
    /// of a 64-character ID each, were the larger part of what a commit's cost grew by
    /// (`perf` under sizecost: `Hasher` 4 % of the supervisor's samples).
    static func networkChanges(_ old: [NetworkID: NetworkRecord], _ new: [NetworkID: NetworkRecord])
        -> [NetworkChange]
    {
        var changes: [NetworkChange] = []
        if old.count == new.count {
            var sameOrder = true
            for (before, after) in zip(old, new) {
                guard before.key == after.key else {
                    sameOrder = false
                    break
                }
                if before.value != after.value { changes.append(NetworkChange(id: after.key, record: after.value)) }
            }
            if sameOrder { return changes }
            changes.removeAll()
        }
        for (id, record) in new where old[id] != record {
            changes.append(NetworkChange(id: id, record: record))
        }
        for id in old.keys where new[id] == nil {
            changes.append(NetworkChange(id: id, record: nil))
        }
        return changes
    }

    /// The pool changes from `old` to `new` when `new` is `old` with some pools changed in place,
    /// some dropped and some appended (every IPAM call does one of these), found in one walk of
    /// both lists; nil for any other order (then ``between(_:_:)`` takes its general path, which
    /// builds a dictionary and a set of every pool: at 1000 networks that was the larger part of
    /// a commit, perf under sizecost). Changed and appended pools come in `new`'s order, then
    /// the dropped ones, as the general path gives them.
    static func poolChangesKeepingOrder(_ old: [AddressPool], _ new: [AddressPool]) -> [PoolChange]? {
        var changes: [PoolChange] = []
        var dropped: [PoolChange] = []
        var droppedIDs = Set<String>()
        var i = 0
        var j = 0
        while i < old.count, j < new.count {
            if old[i].id == new[j].id {
                if old[i] != new[j] { changes.append(PoolChange(id: new[j].id, pool: new[j])) }
                j += 1
            } else {
                dropped.append(PoolChange(id: old[i].id, pool: nil))
                droppedIDs.insert(old[i].id)
            }
            i += 1
        }
        for pool in old[i...] {
            dropped.append(PoolChange(id: pool.id, pool: nil))
            droppedIDs.insert(pool.id)
        }
        for pool in new[j...] {
            // A pool taken for dropped that comes back later: `new` reorders, not appends.
            guard !droppedIDs.contains(pool.id) else { return nil }
            changes.append(PoolChange(id: pool.id, pool: pool))
        }
        return changes + dropped
    }

    /// Applies the record to `state`. Throws a description when its pool order does not match
    /// the pools it leaves (a record that does not belong to this state).
    func apply(to state: inout SupervisorState) throws(StateChangeMismatch) {
        for change in networks { state.networks[change.id] = change.record }
        applyPools(to: &state.ipam)
        if let nextPoolNumber { state.ipam.restoreNextPoolNumber(nextPoolNumber) }
        if let poolOrder, !state.ipam.reorderPools(by: poolOrder) {
            throw StateChangeMismatch(
                detail: "record \(sequence) orders pools \(poolOrder) but the state holds \(state.ipam.pools.map(\.id))"
            )
        }
    }

    private func applyPools(to ipam: inout IPAMState) {
        for change in pools {
            if let pool = change.pool { ipam.replacePool(pool) } else { ipam.dropPool(id: change.id) }
        }
    }
}

/// A journal record that does not fit the state it is applied to.
struct StateChangeMismatch: Error {
    var detail: String
}
