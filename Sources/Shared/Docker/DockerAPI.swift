/// The Docker remote network and IPAM plugin API, with dockerd's exact field names.
/// See docs/ and `docker-plugin-protocol.md`: optional fields may be absent or `null`.
///
/// IDs, MACs and sandbox keys are typed (``NetworkID``, ``EndpointID``, ``MACAddress``,
/// ``SandboxKey``): a request that breaks their rules fails to decode, with the rule's message
/// and the field's name, before any handler runs. Addresses stay text here: ``IPAddress`` reads
/// them in the supervisor's `AddressChecks`, which knows the network's subnets.
public enum DockerAPI {
    /// The generic options key under which dockerd passes `docker network create -o k=v`.
    public static let genericOptionsKey = "com.docker.network.generic"
    /// The `RequestAddress` option that marks a gateway request.
    public static let requestAddressTypeKey = "RequestAddressType"
    public static let gatewayAddressType = "com.docker.network.gateway"
    /// Reply content type of plugin replies.
    public static let contentType = "application/vnd.docker.plugins.v1+json"

    public struct ActivateResponse: Codable, Sendable {
        public var Implements: [String]
        public init(Implements: [String]) { self.Implements = Implements }
    }

    public struct ErrorResponse: Codable, Sendable {
        public var Err: String
        /// The IPAM proxy reads `Error`; network calls read `Err`. Both are sent.
        public var Error: String?
        public init(message: String, ipam: Bool) {
            Err = message
            Error = ipam ? message : nil
        }
    }

    public struct Empty: Codable, Sendable { public init() {} }

    // MARK: NetworkDriver

    public struct CapabilitiesResponse: Codable, Sendable {
        public var Scope: String
        public var ConnectivityScope: String
        public init(Scope: String = "local", ConnectivityScope: String = "local") {
            self.Scope = Scope
            self.ConnectivityScope = ConnectivityScope
        }
    }

    public struct IPAMData: Codable, Sendable, Equatable {
        public var AddressSpace: String?
        public var Pool: String
        public var Gateway: String?
        public var AuxAddresses: [String: String]?
        public init(
            AddressSpace: String? = nil, Pool: String, Gateway: String? = nil, AuxAddresses: [String: String]? = nil
        ) {
            self.AddressSpace = AddressSpace
            self.Pool = Pool
            self.Gateway = Gateway
            self.AuxAddresses = AuxAddresses
        }
    }

    /// Values of `Options`: dockerd mixes strings, booleans and the generic map.
    public enum OptionValue: Codable, Sendable, Equatable {
        case string(String)
        case bool(Bool)
        case number(Double)
        case map([String: String])
        case other

        public init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) {
                self = .string(s)
            } else if let b = try? c.decode(Bool.self) {
                self = .bool(b)
            } else if let n = try? c.decode(Double.self) {
                self = .number(n)
            } else if let m = try? c.decode([String: String].self) {
                self = .map(m)
            } else {
                self = .other
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .string(let s): try c.encode(s)
            case .bool(let b): try c.encode(b)
            case .number(let n): try c.encode(n)
            case .map(let m): try c.encode(m)
            case .other: try c.encodeNil()
            }
        }
    }

    public struct CreateNetworkRequest: Codable, Sendable {
        public var NetworkID: NetworkID
        public var Options: [String: OptionValue]?
        public var IPv4Data: [IPAMData]?
        public var IPv6Data: [IPAMData]?
        public init(
            NetworkID: NetworkID, Options: [String: OptionValue]? = nil, IPv4Data: [IPAMData]? = nil,
            IPv6Data: [IPAMData]? = nil
        ) {
            self.NetworkID = NetworkID
            self.Options = Options
            self.IPv4Data = IPv4Data
            self.IPv6Data = IPv6Data
        }

        /// The user's `-o k=v` options.
        public var genericOptions: [String: String] {
            if case .map(let m)? = Options?[DockerAPI.genericOptionsKey] { return m }
            return [:]
        }
    }

    public struct NetworkRequest: Codable, Sendable {
        public var NetworkID: NetworkID
        public init(NetworkID: NetworkID) { self.NetworkID = NetworkID }
    }

    public struct EndpointInterface: Codable, Sendable, Equatable {
        public var Address: String?
        public var AddressIPv6: String?
        /// dockerd sends `""` when the user gave no MAC: that reads as nil.
        public var MacAddress: MACAddress?
        public init(Address: String? = nil, AddressIPv6: String? = nil, MacAddress: MACAddress? = nil) {
            self.Address = Address
            self.AddressIPv6 = AddressIPv6
            self.MacAddress = MacAddress
        }

        private enum CodingKeys: String, CodingKey { case Address, AddressIPv6, MacAddress }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            Address = try container.decodeIfPresent(String.self, forKey: .Address)
            AddressIPv6 = try container.decodeIfPresent(String.self, forKey: .AddressIPv6)
            if try container.decodeIfPresent(String.self, forKey: .MacAddress)?.isEmpty ?? true {
                MacAddress = nil
            } else {
                MacAddress = try container.decode(MACAddress.self, forKey: .MacAddress)
            }
        }
    }

    public struct CreateEndpointRequest: Codable, Sendable {
        public var NetworkID: NetworkID
        public var EndpointID: EndpointID
        public var Interface: EndpointInterface?
        public var Options: [String: OptionValue]?
        public init(
            NetworkID: NetworkID, EndpointID: EndpointID, Interface: EndpointInterface? = nil,
            Options: [String: OptionValue]? = nil
        ) {
            self.NetworkID = NetworkID
            self.EndpointID = EndpointID
            self.Interface = Interface
            self.Options = Options
        }
    }

    public struct CreateEndpointResponse: Codable, Sendable {
        /// Only fields that were empty in the request; nil when nothing is filled in.
        public var Interface: EndpointInterface?
        public init(Interface: EndpointInterface?) { self.Interface = Interface }
    }

    public struct EndpointRequest: Codable, Sendable {
        public var NetworkID: NetworkID
        public var EndpointID: EndpointID
        public init(NetworkID: NetworkID, EndpointID: EndpointID) {
            self.NetworkID = NetworkID
            self.EndpointID = EndpointID
        }
    }

    public struct EndpointOperInfoResponse: Codable, Sendable {
        public var Value: [String: String]
        public init(Value: [String: String]) { self.Value = Value }
    }

    public struct JoinRequest: Codable, Sendable {
        public var NetworkID: NetworkID
        public var EndpointID: EndpointID
        public var SandboxKey: SandboxKey
        public var Options: [String: OptionValue]?
        public init(
            NetworkID: NetworkID, EndpointID: EndpointID, SandboxKey: SandboxKey, Options: [String: OptionValue]? = nil
        ) {
            self.NetworkID = NetworkID
            self.EndpointID = EndpointID
            self.SandboxKey = SandboxKey
            self.Options = Options
        }
    }

    public struct InterfaceName: Codable, Sendable, Equatable {
        public var SrcName: TapName
        public var DstPrefix: String
        public init(SrcName: TapName, DstPrefix: String) {
            self.SrcName = SrcName
            self.DstPrefix = DstPrefix
        }
    }

    public struct StaticRoute: Codable, Sendable, Equatable {
        public var Destination: String
        public var RouteType: Int
        public var NextHop: String?
        public init(Destination: String, RouteType: Int, NextHop: String? = nil) {
            self.Destination = Destination
            self.RouteType = RouteType
            self.NextHop = NextHop
        }
    }

    public struct JoinResponse: Codable, Sendable {
        public var InterfaceName: InterfaceName
        public var Gateway: String?
        public var GatewayIPv6: String?
        public var StaticRoutes: [StaticRoute]?
        public var DisableGatewayService: Bool?
        public init(InterfaceName: InterfaceName, Gateway: String? = nil, GatewayIPv6: String? = nil) {
            self.InterfaceName = InterfaceName
            self.Gateway = Gateway
            self.GatewayIPv6 = GatewayIPv6
        }
    }

    // MARK: IpamDriver

    public struct IPAMCapabilitiesResponse: Codable, Sendable {
        public var RequiresMACAddress: Bool
        public var RequiresRequestReplay: Bool
        public init(RequiresMACAddress: Bool = false, RequiresRequestReplay: Bool = false) {
            self.RequiresMACAddress = RequiresMACAddress
            self.RequiresRequestReplay = RequiresRequestReplay
        }
    }

    public struct AddressSpacesResponse: Codable, Sendable {
        public var LocalDefaultAddressSpace: String
        public var GlobalDefaultAddressSpace: String
        public init(LocalDefaultAddressSpace: String, GlobalDefaultAddressSpace: String) {
            self.LocalDefaultAddressSpace = LocalDefaultAddressSpace
            self.GlobalDefaultAddressSpace = GlobalDefaultAddressSpace
        }
    }

    public struct RequestPoolRequest: Codable, Sendable {
        public var AddressSpace: String?
        public var Pool: String?
        public var SubPool: String?
        public var Options: [String: String]?
        public var V6: Bool?
        public init(
            AddressSpace: String? = nil, Pool: String? = nil, SubPool: String? = nil, Options: [String: String]? = nil,
            V6: Bool? = nil
        ) {
            self.AddressSpace = AddressSpace
            self.Pool = Pool
            self.SubPool = SubPool
            self.Options = Options
            self.V6 = V6
        }
    }

    public struct RequestPoolResponse: Codable, Sendable {
        public var PoolID: String
        public var Pool: String
        public var Data: [String: String]
        public init(PoolID: String, Pool: String, Data: [String: String] = [:]) {
            self.PoolID = PoolID
            self.Pool = Pool
            self.Data = Data
        }
    }

    public struct ReleasePoolRequest: Codable, Sendable {
        public var PoolID: String
        public init(PoolID: String) { self.PoolID = PoolID }
    }

    public struct RequestAddressRequest: Codable, Sendable {
        public var PoolID: String
        public var Address: String?
        public var Options: [String: String]?
        public init(PoolID: String, Address: String? = nil, Options: [String: String]? = nil) {
            self.PoolID = PoolID
            self.Address = Address
            self.Options = Options
        }
    }

    public struct RequestAddressResponse: Codable, Sendable {
        public var Address: String
        public var Data: [String: String]
        public init(Address: String, Data: [String: String] = [:]) {
            self.Address = Address
            self.Data = Data
        }
    }

    public struct ReleaseAddressRequest: Codable, Sendable {
        public var PoolID: String
        public var Address: String
        public init(PoolID: String, Address: String) {
            self.PoolID = PoolID
            self.Address = Address
        }
    }
}
