import Shared

/// Everything the IPAM module can refuse, with a message a `docker network create` /
/// `docker run` user can act on. Texts that came from the outside are sanitised before
/// they are echoed.
enum IPAMError: ReportableError, Equatable {
    /// Text that is not an IPv4 or IPv6 address.
    case invalidAddress(AddressParseError)
    /// Text that is not a subnet in CIDR form.
    case invalidSubnet(input: String, reason: String)
    /// A subnet such as `10.0.0.1/24` whose host part is not zero.
    case hostBitsSet(input: String, canonical: String)
    /// `RequestPool` without `Pool`: the vde driver has no default pool.
    case missingPool(v6: Bool)
    /// `V6` of `RequestPool` disagrees with the family of `Pool`.
    case familyMismatch(pool: String, requestedV6: Bool)
    /// `SubPool` (`--ip-range`) is not inside `Pool` (`--subnet`).
    case subPoolOutside(subPool: String, pool: String)
    /// No pool with this PoolID.
    case unknownPool(id: String)
    /// An explicit address outside the pool's subnet (or of the other family).
    case addressOutsidePool(address: String, pool: String)
    /// An explicit address that is already allocated.
    case addressInUse(address: String, pool: String)
    /// The gateway address was requested by a container while another container holds it.
    case gatewayTaken(address: String, pool: String)
    /// A gateway request for a pool that already has a gateway.
    case gatewayAlreadySet(gateway: String, pool: String)
    /// The IPv4 network or broadcast address was requested for an endpoint.
    case reservedAddress(address: String, pool: String, kind: String)
    /// No free address is left where automatic assignment looks (`range`: the subnet, or
    /// `--ip-range X of Y`).
    case exhausted(range: String, poolID: String)
    /// `ReleaseAddress` of an address that is not allocated.
    case addressNotAllocated(address: String, pool: String)
    /// A pool of this subnet was requested moments ago and CreateNetwork has not bound it yet.
    case poolPending(subnet: String, poolID: String)
    /// A parse error of the named request field (`Interface.Address`, `IPv4Data[0].Gateway`).
    indirect case inField(String, IPAMError)
    /// An address or pool of the other family in a field of one family.
    case wrongFamily(field: String, input: String, expectedV6: Bool)
    /// An address of a family the network has no subnet of.
    case noSubnet(field: String, input: String, v6: Bool)
    /// An address outside every subnet of the network (or with another prefix length).
    case outsideSubnets(field: String, input: String, subnets: [String])

    var vdeError: VDEError {
        switch self {
        case .invalidAddress(let error):
            return error.vdeError
        case .invalidSubnet(let input, let reason):
            return .invalid(
                "'\(UntrustedText(input))' is not a valid subnet (expected CIDR form such as 10.10.0.0/24 or fd00:10::/64): \(UntrustedText(reason))"
            )
        case .hostBitsSet(let input, let canonical):
            return .invalid("subnet '\(UntrustedText(input))' has host bits set; did you mean \(canonical)?")
        case .missingPool(let v6):
            return .invalid(
                "the vde IPAM driver needs --subnet\(v6 ? " for the IPv6 side of the network" : ""): "
                    + "it has no default address pool (for example: docker network create -d vde --ipam-driver vde "
                    + (v6 ? "--ipv6 --subnet 10.10.0.0/24 --subnet fd00:10::/64 NAME)" : "--subnet 10.10.0.0/24 NAME)"))
        case .familyMismatch(let pool, let requestedV6):
            return requestedV6
                ? .invalid(
                    "subnet \(UntrustedText(pool)) is IPv4 but Docker asked for an IPv6 pool; give an IPv6 --subnet for the IPv6 side of the network"
                )
                : .invalid(
                    "subnet \(UntrustedText(pool)) is IPv6 but Docker asked for an IPv4 pool; add --ipv6 to "
                        + "docker network create (and give an IPv4 --subnet as well)")
        case .subPoolOutside(let subPool, let pool):
            return .invalid(
                "--ip-range \(UntrustedText(subPool)) is not inside --subnet \(pool); pick a range within the subnet")
        case .unknownPool(let id):
            return .notFound("no vde address pool with ID '\(UntrustedText(id))' (the network may have been removed)")
        case .addressOutsidePool(let address, let pool):
            return .invalid("address \(UntrustedText(address)) is not inside \(pool); pick an address of that subnet")
        case .addressInUse(let address, let pool):
            return .conflict(
                "address \(address) of \(pool) is already in use; pick another address or leave it to the driver")
        case .gatewayTaken(let address, let pool):
            return .conflict(
                "address \(address) is the gateway of \(pool) and a container already uses it; pick another address")
        case .gatewayAlreadySet(let gateway, let pool):
            return .conflict("\(pool) already has the gateway \(gateway)")
        case .reservedAddress(let address, let pool, let kind):
            return .invalid(
                "address \(address) is the \(kind) of \(pool) and cannot be given to a container; pick another address")
        case .exhausted(let range, let poolID):
            return .exhausted(
                "no free address left in \(range) (pool \(poolID)); remove unused containers, "
                    + "or create the network with a larger --subnet or --ip-range")
        case .addressNotAllocated(let address, let pool):
            return .notFound("address \(UntrustedText(address)) is not allocated in \(pool)")
        case .poolPending(let subnet, let poolID):
            return .conflict(
                "another network with subnet \(subnet) is being created right now (pool \(poolID)); "
                    + "retry in a moment (dockerd does not tell the plugin which pool a new network uses, so two "
                    + "networks of one subnet are created one after the other)")
        case .inField(let field, let error):
            let inner = error.vdeError
            return VDEError(inner.code, "\(field): \(inner.message)")
        case .wrongFamily(let field, let input, let expectedV6):
            return .invalid(
                "\(field) '\(UntrustedText(input))' is \(expectedV6 ? "IPv4" : "IPv6"); this field carries \(expectedV6 ? "IPv6" : "IPv4")"
            )
        case .noSubnet(let field, let input, let v6):
            return .invalid(
                "\(field) '\(UntrustedText(input))' is \(v6 ? "IPv6" : "IPv4") but the network has no \(v6 ? "IPv6" : "IPv4") subnet"
            )
        case .outsideSubnets(let field, let input, let subnets):
            return .invalid(
                "\(field) '\(UntrustedText(input))' is not an address of the network's subnet "
                    + "\(subnets.joined(separator: " or ")) (with its prefix length)")
        }
    }
}
