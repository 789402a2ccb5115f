import Glibc
import Shared

/// The whole state of the `vde` IPAM driver as a value, stored in the supervisor's state file.
///
/// Its mutating methods implement the IpamDriver calls. Each one validates everything before
/// it changes anything, so a call that throws leaves the state as it was.
///
/// Pools may overlap (two networks with the same `--subnet` are separate L2 segments), so pools
/// are told apart by their PoolID only.
struct IPAMState: Codable, Sendable, Equatable {
    /// Pools in the order they were created.
    private(set) var pools: [AddressPool]
    /// The number of the next PoolID (`vde-pool-<n>`); never reused.
    private(set) var nextPoolNumber: UInt64

    init() {
        pools = []
        nextPoolNumber = 1
    }

    // MARK: Pools

    /// How long a pool that serves no network yet blocks a second pool of its subnet: dockerd
    /// calls CreateNetwork within milliseconds of RequestPool; a pool left by a dockerd that died
    /// in between must not block its subnet for good.
    static let pendingSeconds: Int64 = 60

    /// `IpamDriver.RequestPool`. `Pool` (`--subnet`) is required; `SubPool` (`--ip-range`) must lie
    /// inside it; `V6`, when given, must match its family. The reply's `Pool` is the canonical CIDR.
    ///
    /// A second pool of a subnet whose pool is still *pending* (requested, not yet bound by
    /// CreateNetwork, younger than ``pendingSeconds``) is refused with "retry": that keeps
    /// ``bindPool(subnet:networkID:)`` unambiguous (see there). `now` is seconds since the epoch.
    mutating func requestPool(
        _ r: DockerAPI.RequestPoolRequest,
        now: Int64 = Int64(time(nil))
    ) throws(IPAMError) -> DockerAPI.RequestPoolResponse {
        guard let poolText = r.Pool, !poolText.isEmpty else { throw .missingPool(v6: r.V6 ?? false) }
        let subnet = try Subnet(parsing: poolText)
        if let v6 = r.V6, v6 != subnet.isV6 {
            throw .familyMismatch(pool: subnet.description, requestedV6: v6)
        }
        var subPool: Subnet? = nil
        if let subText = r.SubPool, !subText.isEmpty {
            let parsed = try Subnet(parsing: subText)
            guard subnet.contains(parsed) else {
                throw .subPoolOutside(subPool: parsed.description, pool: subnet.description)
            }
            subPool = parsed
        }
        if let pending = pools.first(where: {
            $0.subnet == subnet && $0.isPending(now: now, window: Self.pendingSeconds)
        }) {
            throw .poolPending(subnet: subnet.description, poolID: pending.id)
        }
        var number = nextPoolNumber
        while pools.contains(where: { $0.id == Self.poolID(number) }) { number += 1 }
        var pool = AddressPool(
            id: Self.poolID(number), subnet: subnet, subPool: subPool,
            v6: subnet.isV6, options: r.Options ?? [:])
        pool.requestedAt = now
        pools.append(pool)
        nextPoolNumber = number + 1
        return DockerAPI.RequestPoolResponse(PoolID: pool.id, Pool: subnet.description, Data: [:])
    }

    /// `IpamDriver.ReleasePool`: forgets the pool and whatever it still had allocated.
    mutating func releasePool(id: String) throws(IPAMError) {
        let index = try poolIndex(id)
        pools.remove(at: index)
    }

    /// The pool with this PoolID, if any.
    func pool(id: String) -> AddressPool? { pools.first { $0.id == id } }

    /// At `CreateNetwork`: records that the most recently created pool with this subnet that
    /// serves no network yet serves `networkID`, and returns its PoolID. If a pool with this
    /// subnet already serves `networkID`, returns that one. Nil when none matches (a network
    /// made with Docker's default IPAM has no vde pool) or `subnet` does not parse.
    ///
    /// Why by subnet and not by PoolID: CreateNetwork does not carry the PoolID. Its IPAMData has
    /// `AddressSpace` (the same for every pool), `Pool`, `Gateway` and `AuxAddresses`, and two
    /// networks of one subnet get the same gateway by default, so nothing dockerd passes tells two
    /// unbound pools of one subnet apart. ``requestPool(_:now:)`` therefore never lets two
    /// pending pools of one subnet exist: between a RequestPool and its CreateNetwork the subnet
    /// names one pool, the newest unbound one. (Older unbound pools are leftovers of a dockerd
    /// that died between the two calls.)
    mutating func bindPool(subnet: String, networkID: NetworkID) -> String? {
        guard let wanted = try? Subnet(parsing: subnet) else { return nil }
        if let bound = pools.first(where: { $0.subnet == wanted && $0.networkID == networkID }) {
            return bound.id
        }
        guard let index = pools.lastIndex(where: { $0.subnet == wanted && $0.networkID == nil }) else { return nil }
        pools[index].networkID = networkID
        return pools[index].id
    }

    /// The PoolIDs serving `networkID`, in creation order.
    func poolIDs(ofNetwork networkID: NetworkID) -> [String] {
        pools.filter { $0.networkID == networkID }.map(\.id)
    }

    /// The addresses allocated in a pool (without the gateway), in ascending order; nil for an unknown pool.
    func allocatedAddresses(inPool id: String) -> [String]? {
        pool(id: id)?.allocated.map(\.description)
    }

    /// Removes every pool serving `networkID` (for cleaning up after a network dockerd forgot);
    /// returns their PoolIDs.
    @discardableResult
    mutating func removePools(ofNetwork networkID: NetworkID) -> [String] {
        let ids = poolIDs(ofNetwork: networkID)
        pools.removeAll { $0.networkID == networkID }
        return ids
    }

    // MARK: Journal replay

    /// Puts `pool` in place of the pool with its PoolID, or appends it (new pools are last):
    /// replaying a state journal record (``StateChange``).
    mutating func replacePool(_ pool: AddressPool) {
        if let index = pools.firstIndex(where: { $0.id == pool.id }) { pools[index] = pool } else { pools.append(pool) }
    }

    /// Forgets the pool with this PoolID, if any (journal replay).
    mutating func dropPool(id: String) {
        pools.removeAll { $0.id == id }
    }

    /// Sets the number of the next PoolID as a journal record holds it.
    mutating func restoreNextPoolNumber(_ number: UInt64) {
        nextPoolNumber = number
    }

    /// Puts the pools in the order of `ids`; false (and unchanged) when `ids` are not exactly their PoolIDs.
    mutating func reorderPools(by ids: [String]) -> Bool {
        let byID = Dictionary(pools.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        guard ids.count == pools.count, Set(ids).count == ids.count else { return false }
        let ordered = ids.compactMap { byID[$0] }
        guard ordered.count == pools.count else { return false }
        pools = ordered
        return true
    }

    // MARK: Addresses

    /// `IpamDriver.RequestAddress`. Returns `ip/prefix-length` of the pool's subnet.
    ///
    /// - A gateway request (`RequestAddressType` = `com.docker.network.gateway`) takes `Address`,
    ///   which may be any address of the subnet, or else the first host address of the subnet.
    /// - Otherwise an empty `Address` gets the lowest free address of `SubPool` (or the subnet),
    ///   never the network, IPv4 broadcast, IPv6 subnet-router anycast or gateway address.
    /// - An explicit `Address` must lie in the subnet (it may be outside `SubPool`) and be free;
    ///   the gateway address may be taken this way by one container.
    mutating func requestAddress(_ r: DockerAPI.RequestAddressRequest) throws(IPAMError)
        -> DockerAPI.RequestAddressResponse
    {
        let index = try poolIndex(r.PoolID)
        var pool = pools[index]
        var requested: IPAddress? = nil
        if let text = r.Address, !text.isEmpty {
            do { requested = try IPAddress(parsing: text) } catch { throw .invalidAddress(error) }
        }
        let isGatewayRequest = r.Options?[DockerAPI.requestAddressTypeKey] == DockerAPI.gatewayAddressType
        let address: IPAddress
        if isGatewayRequest {
            address = try Self.gatewayAddress(requested, in: pool)
            pool.gateway = address
            pool.gatewayHeld = false
        } else if let requested {
            try Self.checkExplicit(requested, in: pool)
            address = requested
            if requested == pool.gateway { pool.gatewayHeld = true } else { pool.allocate(requested) }
        } else {
            guard let free = pool.lowestFreeAddress() else {
                let range = pool.subPool.map { "--ip-range \($0) of \(pool.subnet)" } ?? pool.subnet.description
                throw .exhausted(range: range, poolID: pool.id)
            }
            address = free
            pool.allocate(free)
        }
        pools[index] = pool
        return DockerAPI.RequestAddressResponse(Address: "\(address)/\(pool.subnet.prefixLength)", Data: [:])
    }

    /// `IpamDriver.ReleaseAddress`. Releasing the gateway address releases a container's hold on
    /// it if there is one, and otherwise makes the pool forget its gateway.
    mutating func releaseAddress(_ r: DockerAPI.ReleaseAddressRequest) throws(IPAMError) {
        let index = try poolIndex(r.PoolID)
        let pool = pools[index]
        guard let address = try? IPAddress(parsing: r.Address) else {
            throw .addressNotAllocated(address: r.Address, pool: pool.label)
        }
        if address == pool.gateway {
            if pool.gatewayHeld {
                pools[index].gatewayHeld = false
            } else {
                pools[index].gateway = nil
            }
            return
        }
        guard pools[index].deallocate(address) else {
            throw .addressNotAllocated(address: address.description, pool: pool.label)
        }
    }

    // MARK: Helpers

    private static func poolID(_ number: UInt64) -> String { "vde-pool-\(number)" }

    private func poolIndex(_ id: String) throws(IPAMError) -> Int {
        guard let index = pools.firstIndex(where: { $0.id == id }) else { throw .unknownPool(id: id) }
        return index
    }

    /// The address a gateway request gets: the requested one (any address of the subnet that
    /// is not allocated) or the first host address of the subnet.
    private static func gatewayAddress(_ requested: IPAddress?, in pool: AddressPool) throws(IPAMError) -> IPAddress {
        if let gateway = pool.gateway {
            throw .gatewayAlreadySet(gateway: gateway.description, pool: pool.label)
        }
        let address: IPAddress
        if let requested {
            guard pool.subnet.contains(requested) else {
                throw .addressOutsidePool(address: requested.description, pool: pool.label)
            }
            address = requested
        } else {
            let skipFirst = pool.hasNetworkAndBroadcast || pool.hasSubnetRouterAnycast
            address = IPAddress(v6: pool.subnet.isV6, value: pool.subnet.first.value + (skipFirst ? 1 : 0))
        }
        guard !pool.isAllocated(address) else {
            throw .addressInUse(address: address.description, pool: pool.label)
        }
        return address
    }

    /// Checks an explicit endpoint (or aux) address: inside the subnet, not the IPv4 network or
    /// broadcast address, free; the gateway only while no container holds it.
    private static func checkExplicit(_ address: IPAddress, in pool: AddressPool) throws(IPAMError) {
        guard pool.subnet.contains(address) else {
            throw .addressOutsidePool(address: address.description, pool: pool.label)
        }
        if let kind = pool.reservedKind(of: address) {
            throw .reservedAddress(address: address.description, pool: pool.label, kind: kind)
        }
        if address == pool.gateway {
            if pool.gatewayHeld { throw .gatewayTaken(address: address.description, pool: pool.label) }
            return
        }
        guard !pool.isAllocated(address) else {
            throw .addressInUse(address: address.description, pool: pool.label)
        }
    }

    // MARK: Coding

    private enum CodingKeys: String, CodingKey { case pools, nextPoolNumber }

    /// Tolerates missing keys (an older or hand-made state file) and refuses duplicate PoolIDs.
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        pools = try c.decodeIfPresent([AddressPool].self, forKey: .pools) ?? []
        nextPoolNumber = try c.decodeIfPresent(UInt64.self, forKey: .nextPoolNumber) ?? 1
        var seen = Set<String>()
        for pool in pools where !seen.insert(pool.id).inserted {
            throw DecodingError.dataCorruptedError(
                forKey: .pools, in: c, debugDescription: "PoolID \(pool.id) appears twice")
        }
    }
}
