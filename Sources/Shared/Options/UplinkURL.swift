/// A network's uplink (`-o uplink=URL`): a vdeplug4 URL that joins the network's switch to the
/// same network on other hosts. The worker runs `vde_plug vde://CTLDIR URL` for it
/// (docs/multihost.md); libvdeplug 4 does the distributed part, not us.
///
/// Of the vdeplug4 schemes that carry a segment between hosts, two are accepted, with exactly
/// the parameters their manual pages (vdeplug4 4.0.1) document:
/// - `vxvde://[GROUP][/OPTION...]`: a distributed switch over UDP multicast; any number of
///   hosts, several processes per host.
/// - `udp://[LOCAL:]LOCALPORT->REMOTE:REMOTEPORT`: a point-to-point link between two hosts.
///
/// `vxlan://` is refused with its reason: vdeplug 4.0.1 (Debian 12) sends no unicast over it
/// (measured: `sendmsg` fails with EDESTADDRREQ, `msg_namelen` 0), so only broadcasts would
/// cross and a network would look joined while nothing else works (docs/multihost.md).
///
/// `GROUP` is a multicast address literal (IPv4 224.0.0.0/4 or IPv6 ff00::/8); absent, vdeplug4
/// uses 239.0.0.1 (ff05:56de::1 with `v6`). Every value is checked here, once, so nothing a user
/// typed reaches `vde_plug`'s argv unchecked; the text is kept as given (it is the identity the
/// worker recognises a running uplink by).
public struct UplinkURL: CheckedString {
    public enum Scheme: String, CaseIterable, Sendable {
        case vxvde, udp

        /// Bytes the scheme adds inside the UDP payload in front of each Ethernet frame: the
        /// 8-byte vxvde header; udp:// sends the bare frame (measured, docs/multihost.md:
        /// 1450 and 1458 bytes of IP cross unfragmented, one more splits in two).
        public var headerBytes: Int { self == .udp ? 0 : 8 }

        /// The `/name=value` options its manual page documents (`v4` and `v6` take no value).
        var options: [String] {
            switch self {
            case .vxvde: ["v4", "v6", "port", "vni", "grp", "ttl", "rcvbuf", "hashsize", "expiretime", "if", "bind"]
            case .udp: []
            }
        }
    }

    /// The longest URL accepted: it goes into one argv element and the state file.
    public static let maxBytes = 256
    /// What an error lists as accepted.
    public static let accepted = "vxvde://[GROUP][/OPTION...] or udp://[LOCAL:]LOCALPORT->REMOTE:REMOTEPORT"

    public let rawValue: String
    public let scheme: Scheme
    /// True when the underlay is IPv6 (`v6`, an IPv6 group, or IPv6 udp endpoints).
    public let ipv6: Bool
    /// The `if=` option: the interface the uplink sends from, when pinned.
    public let interface: String?
    /// The segment the URL joins, with vdeplug4's defaults filled in (`vxvde 239.0.0.1 port
    /// 14789 vni 1`; `udp local port 2000`): two networks of one host with the same segment
    /// would be one Ethernet, so the supervisor refuses the second.
    public let segment: String

    public init(_ text: String) throws(VDEError) {
        func fail(_ reason: String) -> VDEError {
            .invalid("option uplink='\(UntrustedText(text))': \(reason); accepted: \(Self.accepted)")
        }
        guard text.utf8.count <= Self.maxBytes else { throw fail("longer than \(Self.maxBytes) bytes") }
        guard text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }) else {
            throw fail("only printable ASCII without spaces is allowed")
        }
        guard !text.hasPrefix("vxlan://") else {
            throw fail(
                "vxlan:// of vdeplug 4.0.1 sends no unicast frames (only broadcasts would cross); vxvde:// is the same multicast design and works"
            )
        }
        guard let separator = text.firstRange(of: "://"),
            let scheme = Scheme(rawValue: String(text[..<separator.lowerBound]))
        else {
            throw fail("unknown or missing scheme")
        }
        let rest = String(text[separator.upperBound...])
        self.rawValue = text
        self.scheme = scheme
        switch scheme {
        case .udp:
            do throws(VDEError) {
                (ipv6, segment) = try Self.checkUDP(rest)
            } catch {
                throw fail(error.message)
            }
            interface = nil
        case .vxvde:
            do throws(VDEError) {
                (ipv6, interface, segment) = try Self.checkMulticast(rest, scheme: scheme)
            } catch {
                throw fail(error.message)
            }
        }
    }

    /// The largest MTU whose frames cross this uplink unfragmented on a 1500-byte underlay: the
    /// outer IP (20 or 40 bytes) and UDP (8) headers, the scheme's header and the inner Ethernet
    /// header (14) come off: 1450 for vxvde over IPv4, 1458 for udp (measured in
    /// docs/multihost.md: a 1450-byte ping crossed vxvde in one datagram, a 1451-byte one in two
    /// fragments).
    public var defaultMTU: Int {
        1500 - (ipv6 ? 40 : 20) - 8 - scheme.headerBytes - 14
    }

    /// Checks `[GROUP][/OPTION...]`; returns whether it is IPv6, the `if=` interface and the segment.
    private static func checkMulticast(_ rest: String, scheme: Scheme) throws(VDEError) -> (Bool, String?, String) {
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var ipv6: Bool?
        var group: IPAddress?
        var values: [String: String] = [:]
        if let text = parts.first, !text.isEmpty {
            let address: IPAddress
            do {
                address = try IPAddress(parsing: text)
            } catch {
                throw .invalid("the group '\(UntrustedText(text))' is not an IP address literal")
            }
            group = address
            switch address {
            case .v4(let value) where value >> 28 == 0xE: ipv6 = false
            case .v6(let value) where value >> 120 == 0xFF: ipv6 = true
            default: throw .invalid("the group \(address) is not a multicast address (224.0.0.0/4 or ff00::/8)")
            }
        }
        var seen = Set<String>()
        var interface: String?
        for option in parts.dropFirst() {
            let (name, value) = splitOption(option)
            guard scheme.options.contains(name) else {
                throw .invalid(
                    "unknown \(scheme.rawValue) option '\(UntrustedText(name))'; known: \(scheme.options.joined(separator: ", "))"
                )
            }
            guard seen.insert(name).inserted else { throw .invalid("option '\(name)' is given twice") }
            values[name] = value
            switch name {
            case "v4", "v6":
                guard value == nil else { throw .invalid("option '\(name)' takes no value") }
                let wantsV6 = name == "v6"
                if let ipv6, ipv6 != wantsV6 { throw .invalid("option '\(name)' contradicts the group's family") }
                ipv6 = wantsV6
            case "port": try checkNumber(value, name, 1...65535)
            case "vni", "grp": try checkNumber(value, name, 0...0xFF_FFFF)
            case "ttl": try checkNumber(value, name, 1...255)
            case "rcvbuf": try checkNumber(value, name, 1...(1 << 30))
            case "hashsize": try checkNumber(value, name, 1...(1 << 20))
            case "expiretime": try checkNumber(value, name, 1...86400)
            case "if":
                guard let value, (try? TapName(value)) != nil else {
                    throw .invalid("option 'if' needs an interface name (1 to 15 letters, digits, '_', '.', '-')")
                }
                interface = value
            case "bind":
                guard let value, (try? IPAddress(parsing: value)) != nil else {
                    throw .invalid("option 'bind' needs an IP address literal")
                }
            default: break
            }
        }
        let v6 = ipv6 ?? false
        // vdeplug4's defaults: the group 239.0.0.1 (ff05:56de::1), vni 1, port 14789; `grp=N`
        // sets both the vni and the group's last three bytes.
        let port = values["port"].flatMap { Int($0) } ?? 14789
        let segment: String
        if let grp = values["grp"].flatMap({ Int($0) }) {
            segment = "\(scheme.rawValue) \(v6 ? "v6" : "v4") grp \(grp) port \(port)"
        } else {
            let address = group.map(String.init(describing:)) ?? (v6 ? "ff05:56de::1" : "239.0.0.1")
            segment = "\(scheme.rawValue) \(address) port \(port) vni \(values["vni"].flatMap { Int($0) } ?? 1)"
        }
        return (v6, interface, segment)
    }

    /// Checks `[LOCAL:]LOCALPORT->REMOTE:REMOTEPORT` (split as libvdeplug_udp does: at `->`, then
    /// at the last `:` of each side); returns whether the remote address is IPv6, and the segment
    /// (the local port it binds).
    private static func checkUDP(_ rest: String) throws(VDEError) -> (Bool, String) {
        guard let arrow = rest.firstRange(of: "->") else {
            throw .invalid("a udp uplink is LOCALPORT->REMOTE:REMOTEPORT")
        }
        let local = String(rest[..<arrow.lowerBound])
        let remote = String(rest[arrow.upperBound...])
        guard let remoteColon = remote.lastIndex(of: ":") else {
            throw .invalid("the remote side '\(UntrustedText(remote))' needs a :PORT")
        }
        let remoteHost = String(remote[..<remoteColon])
        try checkNumber(String(remote[remote.index(after: remoteColon)...]), "remote port", 1...65535)
        let remoteIsV6 = try checkHost(remoteHost, what: "remote host", optional: false)
        let localPort: String
        if let localColon = local.lastIndex(of: ":") {
            localPort = String(local[local.index(after: localColon)...])
            try checkNumber(localPort, "local port", 1...65535)
            let localIsV6 = try checkHost(String(local[..<localColon]), what: "local address", optional: true)
            if let localIsV6, let remoteIsV6, localIsV6 != remoteIsV6 {
                throw .invalid("the local and remote addresses are of different families")
            }
        } else {
            localPort = local
            try checkNumber(local, "local port", 1...65535)
        }
        return (remoteIsV6 ?? false, "udp local port \(localPort)")
    }

    /// An IP literal (returns whether IPv6) or a DNS name (nil); empty only when `optional`.
    private static func checkHost(_ host: String, what: String, optional: Bool) throws(VDEError) -> Bool? {
        if host.isEmpty {
            guard optional else { throw .invalid("the \(what) is missing") }
            return nil
        }
        if let address = try? IPAddress(parsing: host) { return address.isV6 }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        let validLabel = { (label: Substring) in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { c in
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d
                }
        }
        guard host.utf8.count <= 253, labels.allSatisfy(validLabel) else {
            throw .invalid("the \(what) '\(UntrustedText(host))' is neither an IP address nor a host name")
        }
        return nil
    }

    private static func splitOption(_ option: String) -> (String, String?) {
        guard let equals = option.firstIndex(of: "=") else { return (option, nil) }
        return (String(option[..<equals]), String(option[option.index(after: equals)...]))
    }

    private static func checkNumber(_ value: String?, _ name: String, _ range: ClosedRange<Int>) throws(VDEError) {
        guard let value, (1...9).contains(value.count), value.allSatisfy(\.isASCIIDigit), let number = Int(value),
            range.contains(number)
        else {
            throw .invalid("'\(name)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
    }
}
