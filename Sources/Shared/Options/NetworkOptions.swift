/// The `docker network create -o k=v` options of a vde network, parsed strictly.
///
/// Unknown keys are errors (a typo must not silently put a switch somewhere
/// unexpected); values are checked for type, range and path safety.
public struct NetworkOptions: Codable, Sendable, Equatable {
    public static let socketDirKey = "socket_dir"
    public static let createSocketsKey = "create_sockets"
    public static let managementSocketKey = "management_socket"
    public static let socketGroupKey = "socket_group"
    public static let numSwitchportsKey = "num_switchports"
    public static let hubKey = "hub"
    /// `-o uplink=URL`: join the network to the same network on other hosts (``UplinkURL``).
    public static let uplinkKey = "uplink"
    /// Docker's standard driver option for the MTU of a network's interfaces.
    public static let mtuKey = "com.docker.network.driver.mtu"
    public static let knownKeys =
        [
            socketDirKey, createSocketsKey, managementSocketKey, socketGroupKey, numSwitchportsKey, mtuKey, hubKey,
            uplinkKey,
        ]
        + LinkImpairment.Key.allCases.map(\.optionName)
    /// 68 is IPv4's minimum MTU. The top is Ethernet's 1500: vde_switch 2.3.2 drops frames longer
    /// than 1518 bytes (measured with taps at MTU 1600: an IP packet of 1504 bytes crossed, one of
    /// 1505 did not), so 1500 leaves room for a VLAN tag and nothing larger is worth allowing.
    public static let mtuRange = 68...1500
    /// IPv6 needs links of at least 1280 bytes (RFC 8200).
    public static let minimumIPv6MTU = 1280

    public static let defaultNumSwitchports = 32
    public static let maxNumSwitchports = 1024
    /// Unix socket paths are limited to 107 bytes; VDE puts sockets below the ctl dir.
    public static let maxPathLength = 90

    /// An existing (or, with ``createSockets``, to-be-created) switch's ctl dir.
    public var socketDir: String?
    public var createSockets: Bool
    public var managementSocket: String?
    public var socketGroup: GroupName?
    public var numSwitchports: Int
    /// The taps' MTU; nil: the kernel's default, 1500.
    public var mtu: Int?
    /// The default link of every endpoint (`-o link_delay=20ms ...`); nil: unimpaired. An
    /// endpoint's `--driver-opt link_*` overlays it (see ``LinkImpairment/overlaid(with:)``).
    public var link: LinkImpairment?
    /// `-o hub=true`: the plugin's switch runs as a hub (`vde_switch -x`), sending every frame to
    /// every port, so a sniffer container or VM sees all traffic. Only for a switch the plugin
    /// starts (refused with `socket_dir` alone).
    public var hub: Bool
    /// `-o uplink=URL`: the vdeplug4 URL the worker joins the switch to (docs/multihost.md).
    public var uplink: UplinkURL?

    public init(
        socketDir: String? = nil, createSockets: Bool = false, managementSocket: String? = nil,
        socketGroup: GroupName? = nil, numSwitchports: Int = NetworkOptions.defaultNumSwitchports, mtu: Int? = nil,
        link: LinkImpairment? = nil, hub: Bool = false, uplink: UplinkURL? = nil
    ) {
        self.hub = hub
        self.uplink = uplink
        self.mtu = mtu
        self.link = link
        self.socketDir = socketDir
        self.createSockets = createSockets
        self.managementSocket = managementSocket
        self.socketGroup = socketGroup
        self.numSwitchports = numSwitchports
    }

    private enum CodingKeys: String, CodingKey {
        case socketDir, createSockets, managementSocket, socketGroup, numSwitchports, mtu, link, hub, uplink
    }

    /// The MTU the network's taps get: the user's, else what the uplink carries unfragmented
    /// (``UplinkURL/defaultMTU``), else nil (the kernel's 1500). The one place this is decided.
    public var effectiveMTU: Int? { mtu ?? uplink?.defaultMTU }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            socketDir: try container.decodeIfPresent(String.self, forKey: .socketDir),
            createSockets: try container.decode(Bool.self, forKey: .createSockets),
            managementSocket: try container.decodeIfPresent(String.self, forKey: .managementSocket),
            socketGroup: try container.decodeIfPresent(GroupName.self, forKey: .socketGroup),
            numSwitchports: try container.decode(Int.self, forKey: .numSwitchports),
            mtu: try container.decodeIfPresent(Int.self, forKey: .mtu),
            link: try container.decodeIfPresent(LinkImpairment.self, forKey: .link),
            // Records from before `hub` have none.
            hub: try container.decodeIfPresent(Bool.self, forKey: .hub) ?? false,
            uplink: try container.decodeIfPresent(UplinkURL.self, forKey: .uplink))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(socketDir, forKey: .socketDir)
        try container.encode(createSockets, forKey: .createSockets)
        try container.encodeIfPresent(managementSocket, forKey: .managementSocket)
        try container.encodeIfPresent(socketGroup, forKey: .socketGroup)
        try container.encode(numSwitchports, forKey: .numSwitchports)
        try container.encodeIfPresent(mtu, forKey: .mtu)
        try container.encodeIfPresent(link, forKey: .link)
        // Absent when false: a record without a hub reads as it did before `hub` existed.
        if hub { try container.encode(hub, forKey: .hub) }
        try container.encodeIfPresent(uplink, forKey: .uplink)
    }

    /// Parses the generic options map. `groupExists` checks a `socket_group` name against the system.
    public static func parse(_ raw: [String: String], groupExists: (GroupName) -> Bool = { _ in true }) throws(VDEError)
        -> NetworkOptions
    {
        var options = NetworkOptions()
        for key in raw.keys.sorted() where !knownKeys.contains(key) {
            throw .invalid(
                "unknown vde network option '\(UntrustedText(key))'; known options: \(knownKeys.joined(separator: ", "))"
            )
        }
        if let value = raw[socketDirKey] {
            options.socketDir = try checkedPath(value, option: socketDirKey)
        }
        if let value = raw[createSocketsKey] {
            options.createSockets = try parseBool(value, option: createSocketsKey)
            if options.createSockets && options.socketDir == nil {
                throw .invalid(
                    "option create_sockets=true needs socket_dir=/absolute/path: it says where to start the switch")
            }
        }
        if let value = raw[managementSocketKey] {
            options.managementSocket = try checkedPath(value, option: managementSocketKey)
        }
        if let value = raw[socketGroupKey] {
            let group: GroupName
            do {
                group = try GroupName(value)
            } catch {
                throw .invalid("option socket_group: \(error.message)")
            }
            guard groupExists(group) else {
                throw .invalid(
                    "option socket_group='\(group)': no such group on this host (create it with groupadd, or pick an existing group)"
                )
            }
            options.socketGroup = group
        }
        if let value = raw[numSwitchportsKey] {
            guard value.count <= 6, value.allSatisfy(\.isASCIIDigit), let n = Int(value), n >= 1, n <= maxNumSwitchports
            else {
                throw .invalid(
                    "option num_switchports='\(UntrustedText(value))' must be a whole number from 1 to \(maxNumSwitchports)"
                )
            }
            options.numSwitchports = n
        }
        if let value = raw[mtuKey] {
            guard value.count <= 6, value.allSatisfy(\.isASCIIDigit), let n = Int(value) else {
                throw .invalid("option \(mtuKey)='\(UntrustedText(value))' must be a whole number of bytes")
            }
            guard n <= mtuRange.upperBound else {
                throw .invalid(
                    "option \(mtuKey)=\(n) is above \(mtuRange.upperBound): vde_switch 2.3.2 drops Ethernet frames longer than 1518 bytes, so larger packets would not cross the network; use 1500 or less"
                )
            }
            guard n >= mtuRange.lowerBound else {
                throw .invalid("option \(mtuKey)=\(n) is below \(mtuRange.lowerBound), the smallest MTU IPv4 allows")
            }
            options.mtu = n
        }
        if let value = raw[hubKey] {
            options.hub = try parseBool(value, option: hubKey)
            if options.hub && options.socketDir != nil && !options.createSockets {
                throw .invalid(
                    "option hub=true needs a switch the plugin starts: with socket_dir alone the switch is someone else's; add create_sockets=true or drop socket_dir"
                )
            }
        }
        if let value = raw[uplinkKey] {
            options.uplink = try UplinkURL(value)
        }
        let link = try LinkImpairment.parse(options: raw)
        options.link = link == LinkImpairment() ? nil : link
        if let socketDir = options.socketDir, socketDir == options.managementSocket {
            throw .invalid("options socket_dir and management_socket must name different paths")
        }
        return options
    }

    /// `true`/`false` and `1`/`0`, nothing else: `create_sockets=false` must mean false.
    public static func parseBool(_ value: String, option: String) throws(VDEError) -> Bool {
        switch value {
        case "true", "1": return true
        case "false", "0": return false
        default: throw .invalid("option \(option)='\(UntrustedText(value))' must be true or false")
        }
    }

    /// Accepts an absolute, normalised path without `.`/`..` components, control characters
    /// or a trailing slash, short enough for unix sockets below it.
    public static func checkedPath(_ value: String, option: String) throws(VDEError) -> String {
        let shown = UntrustedText(value)
        guard value.hasPrefix("/") else {
            throw .invalid("option \(option)='\(shown)' must be an absolute path")
        }
        guard value.utf8.count <= maxPathLength else {
            throw .invalid(
                "option \(option) is \(value.utf8.count) bytes long; unix socket paths allow at most \(maxPathLength)")
        }
        guard value != "/" else {
            throw .invalid("option \(option) must not be the root directory")
        }
        guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw .invalid("option \(option)='\(shown)' contains control characters")
        }
        let components = value.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            throw .invalid("option \(option)='\(shown)' must be a normalised path (no '.', '..', '//' or trailing '/')")
        }
        return value
    }
}

extension Character {
    /// `0`-`9` only (not other Unicode digits, not signs).
    public var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
