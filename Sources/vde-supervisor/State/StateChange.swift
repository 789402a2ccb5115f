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
        for (id, record) in new.networks where old.networks[id] != record {
            change.networks.append(NetworkChange(id: id, record: record))
        }
        for id in old.networks.keys where new.networks[id] == nil {
            change.networks.append(NetworkChange(id: id, record: nil))
        }
        change.networks.sort { $0.id < $1.id }
        guard old.ipam != new.ipam else { return change }
        if old.ipam.nextPoolNumber != new.ipam.nextPoolNumber { change.nextPoolNumber = new.ipam.nextPoolNumber }
        // The same pools in the same order (an address or a network bound or released: every
        // container with the vde IPAM driver): compare them pair by pair. The general path below
        // builds a dictionary and a set of every pool, which at 1000 networks was the larger
        // part of a commit (perf, sizecost).
        if old.ipam.pools.count == new.ipam.pools.count,
            zip(old.ipam.pools, new.ipam.pools).allSatisfy({ $0.id == $1.id })
        {
            for (before, after) in zip(old.ipam.pools, new.ipam.pools) where before != after {
                change.pools.append(PoolChange(id: after.id, pool: after))
            }
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
