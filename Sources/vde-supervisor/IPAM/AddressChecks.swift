import Shared

/// An address as dockerd writes it on an interface, gateway or aux address: `10.0.0.5/24` (the
/// prefix length of its subnet, host bits set) or a bare `10.0.0.5`.
struct InterfaceAddress: Hashable, Sendable {
    let address: IPAddress
    /// The prefix length given after `/`, if any.
    let prefixLength: Int?

    /// Parses with the one address parser (``IPAddress``) and the one subnet rule (``Subnet``).
    init(parsing text: String) throws(IPAMError) {
        let parts = text.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count <= 2 else {
            throw .invalidAddress(AddressParseError(input: text, reason: "it has more than one '/'"))
        }
        do {
            address = try IPAddress(parsing: String(parts[0]))
        } catch {
            throw .invalidAddress(error)
        }
        guard parts.count == 2 else {
            prefixLength = nil
            return
        }
        // The prefix must be one a subnet of this address could have: reuse Subnet's rule.
        let prefix = parts[1]
        guard !prefix.isEmpty, prefix.utf8.count <= 3, prefix.allSatisfy(\.isASCIIDigit),
            prefix.count == 1 || prefix.first != "0",
            let length = Int(prefix), length <= address.bitWidth
        else {
            throw .invalidAddress(
                AddressParseError(
                    input: text, reason: "the prefix length must be a number from 0 to \(address.bitWidth)"))
        }
        prefixLength = length
    }

    /// True when the address lies in `subnet` and a given prefix length is the subnet's.
    func fits(_ subnet: Subnet) -> Bool {
        subnet.contains(address) && (prefixLength == nil || prefixLength == subnet.prefixLength)
    }
}

/// The address checks of every plugin call that carries addresses, in one place: each field is
/// parsed by ``IPAddress``/``Subnet`` and must lie in the network's (or pool's) subnet where that
/// applies. Each handler calls one of these with one line before it changes anything; a
/// refusal names the field, the text given and what would be accepted.
///
/// The IPAM rules proper (free, reserved, gateway held) stay in ``IPAMState``.
enum AddressChecks {
    /// `NetworkDriver.CreateNetwork`: every `IPv4Data`/`IPv6Data` entry has a `Pool` of its family,
    /// and its `Gateway` and `AuxAddresses` lie in that pool.
    static func check(_ r: DockerAPI.CreateNetworkRequest) throws(IPAMError) {
        for (field, entries, v6) in [("IPv4Data", r.IPv4Data ?? [], false), ("IPv6Data", r.IPv6Data ?? [], true)] {
            for (index, data) in entries.enumerated() {
                let at = "\(field)[\(index)]"
                let pool = try within("\(at).Pool") { () throws(IPAMError) in try Subnet(parsing: data.Pool) }
                guard pool.isV6 == v6 else { throw .wrongFamily(field: "\(at).Pool", input: data.Pool, expectedV6: v6) }
                if let gateway = data.Gateway, !gateway.isEmpty {
                    try check(gateway, field: "\(at).Gateway", in: [pool])
                }
                for (name, aux) in (data.AuxAddresses ?? [:]).sorted(by: { $0.key < $1.key }) {
                    try check(aux, field: "\(at).AuxAddresses[\(name)]", in: [pool])
                }
            }
        }
    }

    /// `NetworkDriver.CreateEndpoint`: `Interface.Address` is an IPv4 and `Interface.AddressIPv6`
    /// an IPv6 address of one of the network's subnets, with that subnet's prefix length.
    static func check(_ r: DockerAPI.CreateEndpointRequest, in network: NetworkRecord) throws(IPAMError) {
        try check(r, ipv4Data: network.ipv4Data, ipv6Data: network.ipv6Data)
    }

    /// ``check(_:in:)`` against the network's IPAM data as CreateNetwork gave it.
    static func check(
        _ r: DockerAPI.CreateEndpointRequest, ipv4Data: [DockerAPI.IPAMData],
        ipv6Data: [DockerAPI.IPAMData]
    ) throws(IPAMError) {
        let fields = [
            ("Interface.Address", r.Interface?.Address, ipv4Data, false),
            ("Interface.AddressIPv6", r.Interface?.AddressIPv6, ipv6Data, true),
        ]
        for (field, text, data, v6) in fields {
            guard let text, !text.isEmpty else { continue }
            let parsed = try within(field) { () throws(IPAMError) in try InterfaceAddress(parsing: text) }
            guard parsed.address.isV6 == v6 else { throw .wrongFamily(field: field, input: text, expectedV6: v6) }
            // Pools were checked at CreateNetwork; a record from an older version may hold others.
            let subnets = data.compactMap { try? Subnet(parsing: $0.Pool) }.filter { $0.isV6 == v6 }
            try check(text, field: field, in: subnets)
        }
    }

    /// `IpamDriver.RequestPool`: `Pool` (`--subnet`) and `SubPool` (`--ip-range`) are subnets,
    /// the second inside the first. (A missing `Pool` is refused by ``IPAMState/requestPool(_:)``.)
    static func check(_ r: DockerAPI.RequestPoolRequest) throws(IPAMError) {
        var pool: Subnet? = nil
        if let text = r.Pool, !text.isEmpty {
            pool = try within("Pool") { () throws(IPAMError) in try Subnet(parsing: text) }
        }
        if let text = r.SubPool, !text.isEmpty {
            let subPool = try within("SubPool") { () throws(IPAMError) in try Subnet(parsing: text) }
            if let pool, !pool.contains(subPool) {
                throw .subPoolOutside(subPool: subPool.description, pool: pool.description)
            }
        }
    }

    /// `IpamDriver.RequestAddress`: a given `Address` is an address of the pool's subnet.
    static func check(_ r: DockerAPI.RequestAddressRequest, in ipam: IPAMState) throws(IPAMError) {
        guard let text = r.Address, !text.isEmpty else { return }
        try checkPlain(text, field: "Address", poolID: r.PoolID, in: ipam)
    }

    /// `IpamDriver.ReleaseAddress`: `Address` is an address of the pool's subnet.
    static func check(_ r: DockerAPI.ReleaseAddressRequest, in ipam: IPAMState) throws(IPAMError) {
        try checkPlain(r.Address, field: "Address", poolID: r.PoolID, in: ipam)
    }

    // MARK: helpers

    /// dockerd sends IPAM addresses without a prefix length.
    private static func checkPlain(_ text: String, field: String, poolID: String, in ipam: IPAMState) throws(IPAMError)
    {
        let address = try within(field) { () throws(IPAMError) in
            do throws(AddressParseError) { return try IPAddress(parsing: text) } catch { throw .invalidAddress(error) }
        }
        // An unknown pool is refused by IPAMState with its own message.
        guard let pool = ipam.pool(id: poolID) else { return }
        guard pool.subnet.contains(address) else {
            throw .addressOutsidePool(address: address.description, pool: pool.label)
        }
    }

    /// `text` parses and fits one of `subnets`.
    private static func check(_ text: String, field: String, in subnets: [Subnet]) throws(IPAMError) {
        let parsed = try within(field) { () throws(IPAMError) in try InterfaceAddress(parsing: text) }
        let family = subnets.filter { $0.isV6 == parsed.address.isV6 }
        guard !family.isEmpty else {
            throw .noSubnet(field: field, input: text, v6: parsed.address.isV6)
        }
        guard family.contains(where: parsed.fits) else {
            throw .outsideSubnets(field: field, input: text, subnets: family.map(\.description))
        }
    }

    /// Runs a parse and names the field in its error.
    private static func within<T>(_ field: String, _ parse: () throws(IPAMError) -> T) throws(IPAMError) -> T {
        do {
            return try parse()
        } catch {
            throw .inField(field, error)
        }
    }
}
