import Shared
import Testing

@testable import vde_supervisor

// MARK: Helpers

private let gatewayOptions = [DockerAPI.requestAddressTypeKey: DockerAPI.gatewayAddressType]

extension IPAMState {
    /// RequestPool; returns the PoolID. Each call happens long after the one before (so a pool
    /// of the same subnet is no longer pending), unless `now` is given.
    mutating func pool(
        _ subnet: String?, range: String? = nil, v6: Bool? = nil,
        options: [String: String]? = nil, now: Int64? = nil
    ) throws(IPAMError) -> String {
        try requestPool(
            .init(AddressSpace: "vde-local", Pool: subnet, SubPool: range, Options: options, V6: v6),
            now: now ?? Int64(nextPoolNumber) * 1000
        ).PoolID
    }

    /// RequestAddress for the gateway; returns the reply's `ip/n`.
    mutating func gateway(_ poolID: String, _ address: String? = nil) throws(IPAMError) -> String {
        try requestAddress(.init(PoolID: poolID, Address: address ?? "", Options: gatewayOptions)).Address
    }

    /// RequestAddress for an endpoint (or aux address); returns the reply's `ip/n`.
    mutating func address(
        _ poolID: String, _ address: String? = nil,
        options: [String: String]? = nil
    ) throws(IPAMError) -> String {
        try requestAddress(.init(PoolID: poolID, Address: address, Options: options)).Address
    }

    mutating func release(_ poolID: String, _ address: String) throws(IPAMError) {
        try releaseAddress(.init(PoolID: poolID, Address: address))
    }
}

/// Runs `body` on a copy of `state` and checks that it fails with `code`, that the message
/// mentions every one of `words`, and that the failed call left the state unchanged.
@discardableResult
private func expectFailure(
    _ state: IPAMState, _ code: VDEError.Code, mentioning words: [String] = [],
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: (inout IPAMState) throws(IPAMError) -> Void
) -> IPAMError? {
    var copy = state
    do {
        try body(&copy)
    } catch {
        let reported = error.vdeError
        #expect(reported.code == code, "\(reported.message)", sourceLocation: sourceLocation)
        for word in words {
            #expect(
                reported.message.contains(word), "'\(word)' missing in: \(reported.message)",
                sourceLocation: sourceLocation)
        }
        #expect(copy == state, "a failed call changed the state", sourceLocation: sourceLocation)
        return error
    }
    Issue.record("expected a \(code) error, the call succeeded", sourceLocation: sourceLocation)
    return nil
}

/// A state with one IPv4 pool `subnet` (and gateway, unless nil); returns it and the PoolID.
private func stateWithPool(
    _ subnet: String = "10.0.0.0/24", range: String? = nil,
    gateway: String? = ""
) throws -> (IPAMState, String) {
    var state = IPAMState()
    let id = try state.pool(subnet, range: range, v6: false)
    if let gateway { _ = try state.gateway(id, gateway.isEmpty ? nil : gateway) }
    return (state, id)
}

// MARK: Pools

@Suite struct IPAMPoolTests {
    @Test func requestPoolAnswersCanonicalPoolAndUniqueIDs() throws {
        var state = IPAMState()
        let first = try state.requestPool(
            .init(AddressSpace: "vde-local", Pool: "10.0.0.0/24", SubPool: "", Options: [:], V6: false))
        #expect(first.PoolID == "vde-pool-1")
        #expect(first.Pool == "10.0.0.0/24")
        #expect(first.Data.isEmpty)
        let second = try state.requestPool(.init(Pool: "FD00:0::/64", V6: true))
        #expect(second.PoolID == "vde-pool-2")
        #expect(second.Pool == "fd00::/64")
        #expect(state.pool(id: "vde-pool-2")?.v6 == true)
    }

    @Test func poolIsRequiredAndNeverDefaulted() {
        for pool in [nil, ""] as [String?] {
            for v6 in [false, true] {
                let error = expectFailure(
                    IPAMState(), .invalidArgument, mentioning: ["the vde IPAM driver needs --subnet"]
                ) { s throws(IPAMError) in
                    _ = try s.pool(pool, v6: v6)
                }
                #expect(error == .missingPool(v6: v6))
            }
        }
        let v6 = IPAMError.missingPool(v6: true).vdeError.message
        #expect(v6.contains("IPv6"))
    }

    @Test func badPoolsAreRefused() {
        expectFailure(IPAMState(), .invalidArgument, mentioning: ["10.0.0.0/24"]) { s throws(IPAMError) in
            _ = try s.pool("10.0.0.1/24")
        }
        for text in ["garbage", "10.0.0.0", "10.0.0.0/40", "300.0.0.0/8", "fd00::/200"] {
            expectFailure(IPAMState(), .invalidArgument) { s throws(IPAMError) in _ = try s.pool(text) }
        }
    }

    @Test func familyMustMatchV6() {
        expectFailure(IPAMState(), .invalidArgument, mentioning: ["10.0.0.0/24", "IPv6"]) { s throws(IPAMError) in
            _ = try s.pool("10.0.0.0/24", v6: true)
        }
        expectFailure(IPAMState(), .invalidArgument, mentioning: ["fd00::/64"]) { s throws(IPAMError) in
            _ = try s.pool("fd00::/64", v6: false)
        }
    }

    @Test func v6FlagMayBeAbsent() throws {
        var state = IPAMState()
        let id = try state.pool("fd00::/64", v6: nil)
        #expect(state.pool(id: id)?.v6 == true)
    }

    @Test func subPoolMustLieInsidePool() throws {
        var state = IPAMState()
        let id = try state.pool("10.0.0.0/24", range: "10.0.0.128/25")
        #expect(state.pool(id: id)?.subPool?.description == "10.0.0.128/25")
        let same = try state.pool("10.0.0.0/24", range: "10.0.0.0/24")
        #expect(state.pool(id: same)?.subPool?.description == "10.0.0.0/24")
        expectFailure(state, .invalidArgument, mentioning: ["10.0.1.0/25", "10.0.0.0/24"]) { s throws(IPAMError) in
            _ = try s.pool("10.0.0.0/24", range: "10.0.1.0/25")
        }
        expectFailure(state, .invalidArgument) { s throws(IPAMError) in
            _ = try s.pool("10.0.0.0/24", range: "10.0.0.0/23")
        }
        expectFailure(state, .invalidArgument) { s throws(IPAMError) in
            _ = try s.pool("10.0.0.0/24", range: "fd00::/120")
        }
        expectFailure(state, .invalidArgument, mentioning: ["did you mean 10.0.0.128/25"]) { s throws(IPAMError) in
            _ = try s.pool("10.0.0.0/24", range: "10.0.0.129/25")
        }
    }

    @Test func optionsAreStored() throws {
        var state = IPAMState()
        let id = try state.pool("10.0.0.0/24", options: ["team": "blue"])
        #expect(state.pool(id: id)?.options == ["team": "blue"])
    }

    @Test func overlappingPoolsAreSeparate() throws {
        var state = IPAMState()
        let a = try state.pool("10.0.0.0/24")
        let b = try state.pool("10.0.0.0/24")
        #expect(a != b)
        #expect(try state.gateway(a) == "10.0.0.1/24")
        #expect(try state.gateway(b) == "10.0.0.1/24")
        #expect(try state.address(a) == "10.0.0.2/24")
        #expect(try state.address(b) == "10.0.0.2/24")
        #expect(try state.address(a, "10.0.0.50") == "10.0.0.50/24")
        #expect(try state.address(b, "10.0.0.50") == "10.0.0.50/24")
        try state.release(a, "10.0.0.50")
        #expect(state.allocatedAddresses(inPool: a) == ["10.0.0.2"])
        #expect(state.allocatedAddresses(inPool: b) == ["10.0.0.2", "10.0.0.50"])
    }

    @Test func releasePool() throws {
        var (state, id) = try stateWithPool()
        _ = try state.address(id)
        expectFailure(state, .notFound, mentioning: ["vde-pool-9"]) { s throws(IPAMError) in
            try s.releasePool(id: "vde-pool-9")
        }
        try state.releasePool(id: id)
        #expect(state.pool(id: id) == nil)
        #expect(state.allocatedAddresses(inPool: id) == nil)
        expectFailure(state, .notFound) { s throws(IPAMError) in try s.releasePool(id: id) }
        expectFailure(state, .notFound, mentioning: [id]) { s throws(IPAMError) in _ = try s.address(id) }
        // PoolIDs are never reused.
        #expect(try state.pool("10.0.0.0/24") == "vde-pool-2")
    }

    @Test func bindPoolPicksTheNewestUnboundPoolOfTheSubnet() throws {
        var state = IPAMState()
        let older = try state.pool("10.0.0.0/24")
        let v6 = try state.pool("fd00::/64", v6: true)
        let newer = try state.pool("10.0.0.0/24")
        #expect(state.bindPool(subnet: "10.0.0.0/24", networkID: "netA") == newer)
        #expect(state.bindPool(subnet: "fd00::/64", networkID: "netA") == v6)
        #expect(state.bindPool(subnet: "10.0.0.0/24", networkID: "netB") == older)
        // Already bound: the same answer again, nothing else changes.
        let before = state
        #expect(state.bindPool(subnet: "10.0.0.0/24", networkID: "netA") == newer)
        #expect(state == before)
        // No unbound pool left; Docker's default IPAM networks have none; garbage is no match.
        #expect(state.bindPool(subnet: "10.0.0.0/24", networkID: "netC") == nil)
        #expect(state.bindPool(subnet: "172.17.0.0/16", networkID: "netD") == nil)
        #expect(state.bindPool(subnet: "not a subnet", networkID: "netE") == nil)
        #expect(state == before)
        #expect(state.poolIDs(ofNetwork: "netA") == [v6, newer])
        #expect(state.poolIDs(ofNetwork: "netB") == [older])
        #expect(state.poolIDs(ofNetwork: "netC") == [])
        #expect(state.pool(id: newer)?.networkID == "netA")
    }

    /// Two networks of one subnet created at once: dockerd's calls interleave (RequestPool A,
    /// RequestPool B, CreateNetwork A, CreateNetwork B), and CreateNetwork names no PoolID. The
    /// second RequestPool is refused until the first pool is bound, so each network binds the
    /// pool dockerd requested for it.
    @Test func concurrentCreatesOfOneSubnetBindTheirOwnPools() throws {
        var state = IPAMState()
        let poolA = try state.pool("10.0.0.0/24", now: 100)
        let error = #expect(throws: IPAMError.self) { try state.pool("10.0.0.0/24", now: 101) }
        #expect(error == .poolPending(subnet: "10.0.0.0/24", poolID: poolA))
        #expect(error?.vdeError.code == .conflict)
        #expect(error?.vdeError.message.contains("retry") == true)
        // Another subnet, and the other family, are not held up.
        let other = try state.pool("10.0.1.0/24", now: 101)
        #expect(state.bindPool(subnet: "10.0.0.0/24", networkID: "netA") == poolA)
        // Network B's dockerd retries its RequestPool after the refusal.
        let poolB = try state.pool("10.0.0.0/24", now: 102)
        #expect(state.bindPool(subnet: "10.0.0.0/24", networkID: "netB") == poolB)
        #expect(state.bindPool(subnet: "10.0.1.0/24", networkID: "netC") == other)
        #expect(state.poolIDs(ofNetwork: "netA") == [poolA])
        #expect(state.poolIDs(ofNetwork: "netB") == [poolB])
    }

    /// A pool left unbound by a dockerd that died between RequestPool and CreateNetwork blocks
    /// its subnet only for ``IPAMState/pendingSeconds``; a pool from an older state file (no
    /// time) or with a time in the future (clock stepped back) does not block at all.
    @Test func anAbandonedPoolBlocksItsSubnetOnlyBriefly() throws {
        var state = IPAMState()
        _ = try state.pool("10.0.0.0/24", now: 1000)
        #expect(throws: IPAMError.self) { try state.pool("10.0.0.0/24", now: 1000 + IPAMState.pendingSeconds - 1) }
        let later = try state.pool("10.0.0.0/24", now: 1000 + IPAMState.pendingSeconds)
        _ = try state.pool("10.0.2.0/24", now: 5000)
        _ = try state.pool("10.0.2.0/24", now: 4000)
        var old = try JSONCoding.decode(
            IPAMState.self,
            from: Array(#"{"pools":[{"id":"vde-pool-9","subnet":"10.0.3.0/24","v6":false}],"nextPoolNumber":10}"#.utf8))
        _ = try old.pool("10.0.3.0/24", now: 1)
        // The newest unbound pool of the subnet is the pending one.
        #expect(state.bindPool(subnet: "10.0.0.0/24", networkID: "netA") == later)
    }

    @Test func removePoolsOfNetwork() throws {
        var state = IPAMState()
        let a = try state.pool("10.0.0.0/24")
        let b = try state.pool("10.0.1.0/24")
        _ = state.bindPool(subnet: "10.0.0.0/24", networkID: "gone")
        #expect(state.removePools(ofNetwork: "gone") == [a])
        #expect(state.pool(id: a) == nil)
        #expect(state.pool(id: b) != nil)
    }
}

// MARK: Gateway

@Suite struct IPAMGatewayTests {
    @Test func defaultGatewayIsTheFirstHostAddress() throws {
        var state = IPAMState()
        let id = try state.pool("10.0.0.0/24")
        #expect(try state.gateway(id) == "10.0.0.1/24")
        #expect(state.pool(id: id)?.gateway?.description == "10.0.0.1")
        #expect(state.allocatedAddresses(inPool: id) == [])
        let withRange = try state.pool("10.1.0.0/16", range: "10.1.5.0/24")
        #expect(try state.gateway(withRange) == "10.1.0.1/16")
    }

    @Test func explicitGatewayMayBeAnyAddressOfTheSubnet() throws {
        var state = IPAMState()
        let id = try state.pool("10.0.0.0/24", range: "10.0.0.0/25")
        #expect(try state.gateway(id, "10.0.0.254") == "10.0.0.254/24")
        expectFailure(state, .conflict, mentioning: ["10.0.0.254"]) { s throws(IPAMError) in
            _ = try s.gateway(id, "10.0.0.1")
        }
        let other = try state.pool("10.0.0.0/24")
        expectFailure(state, .invalidArgument, mentioning: ["10.0.1.1", "10.0.0.0/24", other]) { s throws(IPAMError) in
            _ = try s.gateway(other, "10.0.1.1")
        }
        expectFailure(state, .invalidArgument, mentioning: ["fd00::1"]) { s throws(IPAMError) in
            _ = try s.gateway(other, "fd00::1")
        }
        expectFailure(state, .invalidArgument) { s throws(IPAMError) in _ = try s.gateway(other, "10.0.0.x") }
    }

    @Test func gatewayCannotBeAnAllocatedAddress() throws {
        var (state, id) = try stateWithPool(gateway: nil)
        _ = try state.address(id, "10.0.0.1")
        expectFailure(state, .conflict, mentioning: ["10.0.0.1"]) { s throws(IPAMError) in _ = try s.gateway(id) }
    }

    @Test func gatewayIsNeverAssignedAutomatically() throws {
        var (state, id) = try stateWithPool(gateway: "10.0.0.2")
        #expect(try state.address(id) == "10.0.0.1/24")
        #expect(try state.address(id) == "10.0.0.3/24")
        #expect(!(state.allocatedAddresses(inPool: id) ?? []).contains("10.0.0.2"))
    }

    @Test func containerMayTakeTheGatewayOnce() throws {
        var (state, id) = try stateWithPool()
        #expect(try state.address(id, "10.0.0.1") == "10.0.0.1/24")
        #expect(state.pool(id: id)?.gatewayHeld == true)
        expectFailure(state, .conflict, mentioning: ["10.0.0.1", "gateway"]) { s throws(IPAMError) in
            _ = try s.address(id, "10.0.0.1")
        }
        // Still never handed out automatically.
        #expect(try state.address(id) == "10.0.0.2/24")
    }

    @Test func releasingTheGatewayReleasesTheHoldThenTheGateway() throws {
        var (state, id) = try stateWithPool()
        _ = try state.address(id, "10.0.0.1")
        try state.release(id, "10.0.0.1")
        #expect(state.pool(id: id)?.gatewayHeld == false)
        #expect(state.pool(id: id)?.gateway?.description == "10.0.0.1")
        // The gateway can be taken by a container again.
        _ = try state.address(id, "10.0.0.1")
        try state.release(id, "10.0.0.1")
        // Without a hold, releasing forgets the gateway (network removal).
        try state.release(id, "10.0.0.1")
        #expect(state.pool(id: id)?.gateway == nil)
        expectFailure(state, .notFound, mentioning: ["10.0.0.1"]) { s throws(IPAMError) in try s.release(id, "10.0.0.1")
        }
        // A new gateway may be requested afterwards.
        #expect(try state.gateway(id) == "10.0.0.1/24")
    }

    @Test func onlyTheGatewayTypeMakesAGatewayRequest() throws {
        var (state, id) = try stateWithPool(gateway: nil)
        let other = [
            DockerAPI.requestAddressTypeKey: "something.else",
            "com.docker.network.endpoint.macaddress": "02:00:00:00:00:01",
        ]
        #expect(try state.address(id, nil, options: other) == "10.0.0.1/24")
        #expect(state.pool(id: id)?.gateway == nil)
        #expect(state.allocatedAddresses(inPool: id) == ["10.0.0.1"])
    }

    @Test func smallSubnetsGetTheirFirstAddressAsGateway() throws {
        var state = IPAMState()
        let p31 = try state.pool("10.0.0.0/31")
        #expect(try state.gateway(p31) == "10.0.0.0/31")
        let p32 = try state.pool("10.0.0.9/32")
        #expect(try state.gateway(p32) == "10.0.0.9/32")
        let v6 = try state.pool("fd00::/64", v6: true)
        #expect(try state.gateway(v6) == "fd00::1/64")
        let v6p127 = try state.pool("fd00::/127", v6: true)
        #expect(try state.gateway(v6p127) == "fd00::/127")
    }
}

// MARK: Addresses

@Suite struct IPAMAddressTests {
    @Test func automaticAssignmentSkipsNetworkGatewayAndAllocated() throws {
        var (state, id) = try stateWithPool()
        #expect(try state.address(id) == "10.0.0.2/24")
        #expect(try state.address(id, "10.0.0.3") == "10.0.0.3/24")
        #expect(try state.address(id) == "10.0.0.4/24")
    }

    @Test func releasedAddressesAreReusedLowestFirst() throws {
        var (state, id) = try stateWithPool()
        for _ in 0..<4 { _ = try state.address(id) }  // .2 ... .5
        try state.release(id, "10.0.0.4")
        try state.release(id, "10.0.0.3")
        #expect(try state.address(id) == "10.0.0.3/24")
        #expect(try state.address(id) == "10.0.0.4/24")
        #expect(try state.address(id) == "10.0.0.6/24")
    }

    @Test func subPoolIsWhereAutomaticAssignmentHappens() throws {
        var (state, id) = try stateWithPool("10.0.0.0/24", range: "10.0.0.128/25")
        #expect(try state.address(id) == "10.0.0.128/24")
        #expect(try state.address(id) == "10.0.0.129/24")
        // Explicit addresses may lie outside the range, as with Docker's default IPAM.
        #expect(try state.address(id, "10.0.0.7") == "10.0.0.7/24")
        #expect(try state.address(id) == "10.0.0.130/24")
    }

    @Test func subPoolAtTheEndStopsBeforeBroadcast() throws {
        var (state, id) = try stateWithPool("10.0.0.0/24", range: "10.0.0.252/30")
        #expect(try state.address(id) == "10.0.0.252/24")
        #expect(try state.address(id) == "10.0.0.253/24")
        #expect(try state.address(id) == "10.0.0.254/24")
        expectFailure(
            state, .exhausted, mentioning: ["no free address left in --ip-range 10.0.0.252/30 of 10.0.0.0/24", id]
        ) { s throws(IPAMError) in
            _ = try s.address(id)
        }
    }

    @Test func explicitAddressesOutsideTheSubnetAreRefused() throws {
        let (state, id) = try stateWithPool()
        for text in ["10.0.1.5", "192.168.0.1", "fd00::5"] {
            expectFailure(state, .invalidArgument, mentioning: [text, "10.0.0.0/24", id]) { s throws(IPAMError) in
                _ = try s.address(id, text)
            }
        }
    }

    @Test func explicitAddressesInUseAreRefused() throws {
        var (state, id) = try stateWithPool()
        _ = try state.address(id, "10.0.0.9")
        expectFailure(state, .conflict, mentioning: ["10.0.0.9", "10.0.0.0/24", id]) { s throws(IPAMError) in
            _ = try s.address(id, "10.0.0.9")
        }
    }

    @Test func networkAndBroadcastAreRefusedForEndpoints() throws {
        let (state, id) = try stateWithPool()
        expectFailure(state, .invalidArgument, mentioning: ["10.0.0.0", "network address"]) { s throws(IPAMError) in
            _ = try s.address(id, "10.0.0.0")
        }
        expectFailure(state, .invalidArgument, mentioning: ["10.0.0.255", "broadcast address"]) { s throws(IPAMError) in
            _ = try s.address(id, "10.0.0.255")
        }
    }

    @Test func garbageAddressesAreRefused() throws {
        let (state, id) = try stateWithPool()
        for text in ["garbage", "10.0.0.300", "10.0.0.5/24", " 10.0.0.5"] {
            expectFailure(state, .invalidArgument) { s throws(IPAMError) in _ = try s.address(id, text) }
        }
        expectFailure(state, .notFound, mentioning: ["nope"]) { s throws(IPAMError) in _ = try s.address("nope") }
    }

    @Test func exhaustionNamesThePool() throws {
        var (state, id) = try stateWithPool("10.0.0.0/30")
        #expect(try state.address(id) == "10.0.0.2/30")
        let error = expectFailure(state, .exhausted, mentioning: ["no free address left in 10.0.0.0/30 (pool \(id))"]) {
            s throws(IPAMError) in
            _ = try s.address(id)
        }
        #expect(error == .exhausted(range: "10.0.0.0/30", poolID: id))
    }

    @Test func slash31And32HaveNoNetworkOrBroadcast() throws {
        var state = IPAMState()
        let p31 = try state.pool("10.0.0.0/31")
        #expect(try state.address(p31) == "10.0.0.0/31")
        #expect(try state.address(p31) == "10.0.0.1/31")
        expectFailure(state, .exhausted) { s throws(IPAMError) in _ = try s.address(p31) }
        let explicit31 = try state.pool("10.0.0.0/31")
        #expect(try state.address(explicit31, "10.0.0.1") == "10.0.0.1/31")
        #expect(try state.address(explicit31, "10.0.0.0") == "10.0.0.0/31")
        let p32 = try state.pool("10.0.0.7/32")
        #expect(try state.address(p32) == "10.0.0.7/32")
        expectFailure(state, .exhausted) { s throws(IPAMError) in _ = try s.address(p32) }
    }

    @Test func auxAddressesArePlainExplicitRequests() throws {
        var (state, id) = try stateWithPool()
        _ = try state.address(id, "10.0.0.2")  // --aux-address host=10.0.0.2
        #expect(try state.address(id) == "10.0.0.3/24")
        try state.release(id, "10.0.0.2")
        #expect(try state.address(id) == "10.0.0.2/24")
    }

    @Test func releaseErrors() throws {
        var (state, id) = try stateWithPool()
        _ = try state.address(id)
        expectFailure(state, .notFound, mentioning: ["10.0.0.77", id]) { s throws(IPAMError) in
            try s.release(id, "10.0.0.77")
        }
        expectFailure(state, .notFound, mentioning: ["vde-pool-42"]) { s throws(IPAMError) in
            try s.release("vde-pool-42", "10.0.0.2")
        }
        expectFailure(state, .notFound) { s throws(IPAMError) in try s.release(id, "garbage") }
        expectFailure(state, .notFound) { s throws(IPAMError) in try s.release(id, "") }
        try state.release(id, "10.0.0.2")
        expectFailure(state, .notFound) { s throws(IPAMError) in try s.release(id, "10.0.0.2") }
        #expect(state.allocatedAddresses(inPool: id) == [])
    }

    @Test func aWholeSlash26() throws {
        var (state, id) = try stateWithPool("10.0.0.0/26", gateway: "10.0.0.17")
        let subnet = try Subnet(parsing: "10.0.0.0/26")
        var seen = Set<String>()
        for _ in 0..<61 {
            let reply = try state.address(id)
            #expect(reply.hasSuffix("/26"))
            let address = try IPAddress(parsing: String(reply.dropLast(3)))
            #expect(subnet.contains(address))
            #expect(!["10.0.0.0", "10.0.0.63", "10.0.0.17"].contains(address.description))
            #expect(seen.insert(address.description).inserted, "\(address) handed out twice")
        }
        #expect(seen.count == 61)
        expectFailure(state, .exhausted) { s throws(IPAMError) in _ = try s.address(id) }
        // Release every third address; they come back lowest first.
        let released = (state.allocatedAddresses(inPool: id) ?? []).enumerated().filter { $0.offset % 3 == 0 }.map(
            \.element)
        for address in released { try state.release(id, address) }
        for address in released { #expect(try state.address(id) == "\(address)/26") }
        expectFailure(state, .exhausted) { s throws(IPAMError) in _ = try s.address(id) }
    }

    @Test func allocationsAreListedInNumericOrder() throws {
        var (state, id) = try stateWithPool()
        for text in ["10.0.0.100", "10.0.0.9", "10.0.0.10"] { _ = try state.address(id, text) }
        #expect(state.allocatedAddresses(inPool: id) == ["10.0.0.9", "10.0.0.10", "10.0.0.100"])
    }
}

// MARK: IPv6

@Suite struct IPAMIPv6Tests {
    @Test func automaticAssignmentSkipsTheAnycastAddress() throws {
        var state = IPAMState()
        let id = try state.pool("fd00:1::/64", v6: true)
        // Without a gateway, the subnet-router anycast address is still skipped.
        #expect(try state.address(id) == "fd00:1::1/64")
        // The default gateway (the first host address) is taken now: a clear conflict.
        expectFailure(state, .conflict, mentioning: ["fd00:1::1"]) { s throws(IPAMError) in _ = try s.gateway(id) }
        #expect(try state.gateway(id, "fd00:1::fffe") == "fd00:1::fffe/64")
    }

    @Test func gatewayThenEndpoints() throws {
        var state = IPAMState()
        let id = try state.pool("fd00:1::/64", v6: true)
        #expect(try state.gateway(id) == "fd00:1::1/64")
        #expect(try state.address(id) == "fd00:1::2/64")
        #expect(try state.address(id, "FD00:1:0:0:0:0:0:ABCD") == "fd00:1::abcd/64")
        #expect(try state.address(id, "fd00:1::ffff:ffff:ffff:ffff") == "fd00:1::ffff:ffff:ffff:ffff/64")
        // The anycast address may be given explicitly; only automatic assignment skips it.
        #expect(try state.address(id, "fd00:1::") == "fd00:1::/64")
        #expect(try state.address(id) == "fd00:1::3/64")
        expectFailure(state, .conflict, mentioning: ["fd00:1::abcd"]) { s throws(IPAMError) in
            _ = try s.address(id, "fd00:1::abcd")
        }
        expectFailure(state, .invalidArgument, mentioning: ["fd00:2::1", "fd00:1::/64"]) { s throws(IPAMError) in
            _ = try s.address(id, "fd00:2::1")
        }
        expectFailure(state, .invalidArgument) { s throws(IPAMError) in _ = try s.address(id, "10.0.0.1") }
        try state.release(id, "fd00:1:0::abcd")
        #expect(
            state.allocatedAddresses(inPool: id) == [
                "fd00:1::", "fd00:1::2", "fd00:1::3", "fd00:1::ffff:ffff:ffff:ffff",
            ])
    }

    @Test func manyAllocationsInASlash64StayFast() throws {
        var state = IPAMState()
        let id = try state.pool("fd00::/64", v6: true)
        _ = try state.gateway(id)
        let count = 3000
        let clock = ContinuousClock()
        let start = clock.now
        for i in 0..<count {
            #expect(try state.address(id) == "fd00::\(String(i + 2, radix: 16))/64")
        }
        let elapsed = clock.now - start
        #expect(state.allocatedAddresses(inPool: id)?.count == count)
        #expect(elapsed < .seconds(30), "took \(elapsed)")
        // A hole is found again.
        try state.release(id, "fd00::400")
        #expect(try state.address(id) == "fd00::400/64")
    }

    @Test func rangeAtTheTopOfTheAddressSpaceDoesNotOverflow() throws {
        var state = IPAMState()
        let id = try state.pool("::/0", range: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126", v6: true)
        for last in ["fffc", "fffd", "fffe", "ffff"] {
            #expect(try state.address(id) == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:\(last)/0")
        }
        expectFailure(state, .exhausted) { s throws(IPAMError) in _ = try s.address(id) }
        let top4 = try state.pool("255.255.255.252/30")
        #expect(try state.address(top4) == "255.255.255.253/30")
        #expect(try state.address(top4) == "255.255.255.254/30")
        expectFailure(state, .exhausted) { s throws(IPAMError) in _ = try s.address(top4) }
    }

    @Test func slash128() throws {
        var state = IPAMState()
        let id = try state.pool("fd00::7/128", v6: true)
        #expect(try state.address(id) == "fd00::7/128")
        expectFailure(state, .exhausted) { s throws(IPAMError) in _ = try s.address(id) }
    }
}

// MARK: Stored form

@Suite struct IPAMCodingTests {
    @Test func roundTripKeepsEverything() throws {
        var state = IPAMState()
        let a = try state.pool("10.0.0.0/24", range: "10.0.0.128/25", v6: false, options: ["k": "v"])
        let b = try state.pool("fd00::/64", v6: true)
        _ = try state.gateway(a)
        _ = try state.address(a, "10.0.0.1")
        _ = try state.address(a)
        _ = try state.address(b)
        _ = state.bindPool(subnet: "10.0.0.0/24", networkID: "net1")
        let bytes = try JSONCoding.encodePretty(state)
        let decoded = try JSONCoding.decode(IPAMState.self, from: bytes)
        #expect(decoded == state)
        #expect(try JSONCoding.encodePretty(decoded) == bytes)
        #expect(decoded.nextPoolNumber == 3)
    }

    @Test func storedFormIsReadableAndStable() throws {
        var (state, id) = try stateWithPool()
        for text in ["10.0.0.100", "10.0.0.9", "10.0.0.10"] { _ = try state.address(id, text) }
        let json = try JSONCoding.string(state)
        #expect(json.contains(#""allocated":["10.0.0.9","10.0.0.10","10.0.0.100"]"#))
        #expect(json.contains(#""gateway":"10.0.0.1""#))
        #expect(json.contains(#""subnet":"10.0.0.0/24""#))
    }

    @Test func decodingToleratesMissingKeys() throws {
        #expect(try JSONCoding.decode(IPAMState.self, from: Array("{}".utf8)) == IPAMState())
        let json =
            #"{"pools":[{"id":"vde-pool-1","subnet":"10.0.0.0/24","allocated":["10.0.0.3","10.0.0.2","10.0.0.3"]}]}"#
        var state = try JSONCoding.decode(IPAMState.self, from: Array(json.utf8))
        #expect(state.allocatedAddresses(inPool: "vde-pool-1") == ["10.0.0.2", "10.0.0.3"])
        #expect(try state.address("vde-pool-1") == "10.0.0.1/24")
        // The counter skips IDs that are taken.
        #expect(try state.pool("10.0.0.0/24") == "vde-pool-2")
    }

    @Test(arguments: [
        #"{"pools":[{"id":"p","subnet":"10.0.0.1/24"}]}"#,
        #"{"pools":[{"id":"p","subnet":"10.0.0.0/24","allocated":["10.0.1.1"]}]}"#,
        #"{"pools":[{"id":"p","subnet":"10.0.0.0/24","subPool":"10.0.1.0/25"}]}"#,
        #"{"pools":[{"id":"p","subnet":"10.0.0.0/24","gateway":"fd00::1"}]}"#,
        #"{"pools":[{"id":"p","subnet":"10.0.0.0/24"},{"id":"p","subnet":"10.0.0.0/24"}]}"#,
    ])
    func decodingRefusesInconsistentState(json: String) {
        #expect(throws: DecodingError.self) { _ = try JSONCoding.decode(IPAMState.self, from: Array(json.utf8)) }
    }
}
