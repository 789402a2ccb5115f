import Shared

/// One address pool handed out by `RequestPool`: a `--subnet`, optionally an `--ip-range`
/// for automatic assignment, its gateway and the addresses given out.
///
/// Everything needed to rebuild the network after a crash is kept here. The allocated
/// addresses are held sorted, and stored as sorted strings so that the state file is stable.
struct AddressPool: Codable, Sendable, Equatable {
    /// The PoolID given to dockerd (`vde-pool-<n>`).
    var id: String
    /// `--subnet`.
    var subnet: Subnet
    /// `--ip-range`: where automatic assignment happens (the whole subnet when nil).
    var subPool: Subnet?
    /// The pool was requested for the IPv6 side of a network.
    var v6: Bool
    /// `--ipam-opt` options, stored as given.
    var options: [String: String]
    /// The gateway, once requested.
    var gateway: IPAddress?
    /// A container took the gateway address explicitly (`--ip` equal to the gateway).
    var gatewayHeld: Bool
    /// Addresses given to endpoints and aux addresses, sorted, without the gateway.
    private(set) var allocated: [IPAddress]
    /// The Docker network the pool serves, once `CreateNetwork` told us (see `IPAMState.bindPool`).
    var networkID: NetworkID?
    /// When `RequestPool` made it (seconds since the epoch); nil in state files of older versions.
    /// While it serves no network yet and is younger than ``IPAMState/pendingSeconds`` it is
    /// *pending*: no second pool of its subnet may be made (see ``IPAMState/requestPool(_:now:)``).
    var requestedAt: Int64?

    init(id: String, subnet: Subnet, subPool: Subnet?, v6: Bool, options: [String: String]) {
        self.id = id
        self.subnet = subnet
        self.subPool = subPool
        self.v6 = v6
        self.options = options
        self.gateway = nil
        self.gatewayHeld = false
        self.allocated = []
        self.networkID = nil
        self.requestedAt = nil
    }

    /// Requested less than `window` seconds before `now` and serving no network yet.
    func isPending(now: Int64, window: Int64) -> Bool {
        guard networkID == nil, let requestedAt else { return false }
        return requestedAt <= now && now - requestedAt < window
    }

    /// How the pool is named in messages: `pool vde-pool-3 (10.0.0.0/24)`.
    var label: String { "pool \(id) (\(subnet))" }

    /// Where automatic assignment looks.
    var assignmentRange: Subnet { subPool ?? subnet }

    /// IPv4 subnets up to /30 reserve their first (network) and last (broadcast) address.
    var hasNetworkAndBroadcast: Bool { !subnet.isV6 && subnet.prefixLength < 31 }

    /// IPv6 subnets up to /126 reserve the subnet-router anycast address (host part all zero),
    /// but only from automatic assignment (RFC 4291 2.6.1; /127 and /128 have none, RFC 6164).
    var hasSubnetRouterAnycast: Bool { subnet.isV6 && subnet.prefixLength < 127 }

    /// The name of the reserved role of `address` for endpoints, if any.
    func reservedKind(of address: IPAddress) -> String? {
        guard hasNetworkAndBroadcast else { return nil }
        if address == subnet.first { return "network address" }
        if address == subnet.last { return "broadcast address" }
        return nil
    }

    /// Whether automatic assignment must skip `address` for reasons other than allocation.
    func isReservedForAutomaticAssignment(_ address: IPAddress) -> Bool {
        if address == gateway { return true }
        if hasNetworkAndBroadcast { return address == subnet.first || address == subnet.last }
        if hasSubnetRouterAnycast { return address == subnet.first }
        return false
    }

    func isAllocated(_ address: IPAddress) -> Bool {
        let i = insertionIndex(of: address)
        return i < allocated.count && allocated[i] == address
    }

    /// The lowest address of ``assignmentRange`` that is neither reserved nor allocated, or nil.
    ///
    /// Walks the range and the sorted allocations side by side, so it costs at most one step per
    /// allocated or reserved address, whatever the size of the range.
    func lowestFreeAddress() -> IPAddress? {
        let range = assignmentRange
        let v6 = range.isV6
        let end = range.last.value
        var candidate = range.first.value
        var i = insertionIndex(of: range.first)
        while true {
            let address = IPAddress(v6: v6, value: candidate)
            while i < allocated.count && allocated[i] < address { i += 1 }
            let taken = (i < allocated.count && allocated[i] == address) || isReservedForAutomaticAssignment(address)
            if !taken { return address }
            if candidate == end { return nil }
            candidate += 1
        }
    }

    mutating func allocate(_ address: IPAddress) {
        let i = insertionIndex(of: address)
        guard i == allocated.count || allocated[i] != address else { return }
        allocated.insert(address, at: i)
    }

    /// Removes `address`; returns false when it was not allocated.
    @discardableResult
    mutating func deallocate(_ address: IPAddress) -> Bool {
        let i = insertionIndex(of: address)
        guard i < allocated.count && allocated[i] == address else { return false }
        allocated.remove(at: i)
        return true
    }

    /// Binary search: the index of the first allocated address not below `address`.
    private func insertionIndex(of address: IPAddress) -> Int {
        var low = 0
        var high = allocated.count
        while low < high {
            let mid = (low + high) / 2
            if allocated[mid] < address { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private enum CodingKeys: String, CodingKey {
        case id, subnet, subPool, v6, options, gateway, gatewayHeld, allocated, networkID, requestedAt
    }

    /// Decodes a stored pool; the allocations are sorted and de-duplicated again, so a
    /// hand-edited file cannot break the search.
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        subnet = try c.decode(Subnet.self, forKey: .subnet)
        subPool = try c.decodeIfPresent(Subnet.self, forKey: .subPool)
        v6 = try c.decodeIfPresent(Bool.self, forKey: .v6) ?? subnet.isV6
        options = try c.decodeIfPresent([String: String].self, forKey: .options) ?? [:]
        gateway = try c.decodeIfPresent(IPAddress.self, forKey: .gateway)
        gatewayHeld = try c.decodeIfPresent(Bool.self, forKey: .gatewayHeld) ?? false
        let stored = try c.decodeIfPresent([IPAddress].self, forKey: .allocated) ?? []
        allocated = Array(Set(stored)).sorted()
        networkID = try c.decodeIfPresent(NetworkID.self, forKey: .networkID)
        requestedAt = try c.decodeIfPresent(Int64.self, forKey: .requestedAt)
        if let subPool, !subnet.contains(subPool) {
            throw DecodingError.dataCorruptedError(
                forKey: .subPool, in: c, debugDescription: "subPool \(subPool) of pool \(id) is not inside \(subnet)")
        }
        if let bad = allocated.first(where: { !subnet.contains($0) })
            ?? gateway.flatMap({ subnet.contains($0) ? nil : $0 })
        {
            throw DecodingError.dataCorruptedError(
                forKey: .allocated, in: c, debugDescription: "address \(bad) of pool \(id) is not inside \(subnet)")
        }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(subnet, forKey: .subnet)
        try c.encodeIfPresent(subPool, forKey: .subPool)
        try c.encode(v6, forKey: .v6)
        try c.encode(options, forKey: .options)
        try c.encodeIfPresent(gateway, forKey: .gateway)
        try c.encode(gatewayHeld, forKey: .gatewayHeld)
        try c.encode(allocated, forKey: .allocated)
        try c.encodeIfPresent(networkID, forKey: .networkID)
        try c.encodeIfPresent(requestedAt, forKey: .requestedAt)
    }
}
