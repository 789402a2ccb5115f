/// A unicast Ethernet address, held normalised: lower case, `aa:bb:cc:dd:ee:ff`.
///
/// Parsing accepts either case; a multicast address (lowest bit of the first byte set) is
/// refused, because a tap cannot have one.
public struct MACAddress: CheckedString {
    public let rawValue: String
    /// The six bytes, first byte first.
    public let bytes: [UInt8]

    public init(_ text: String) throws(VDEError) {
        guard let bytes = Self.unicastBytes(text) else {
            throw .invalid("MAC address '\(UntrustedText(text))' is not a unicast MAC like 02:42:ac:11:00:02")
        }
        self.init(bytes: bytes)
    }

    /// A locally administered unicast MAC derived from the endpoint ID: the same ID gives the
    /// same MAC after every restart.
    public init(derivedFrom endpoint: EndpointID) {
        // FNV-1a 64-bit: enough spread for 40 bits of a MAC.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in endpoint.rawValue.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        self.init(bytes: [0x02] + (0..<5).map { UInt8(truncatingIfNeeded: hash >> (8 * UInt64($0))) })
    }

    private init(bytes: [UInt8]) {
        self.bytes = bytes
        rawValue = bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }

    /// The six bytes of `aa:bb:cc:dd:ee:ff` (either case) when it is a unicast MAC, else nil.
    private static func unicastBytes(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.utf8.count == 2, part.allSatisfy(\.isHexDigit), let b = UInt8(part, radix: 16) else {
                return nil
            }
            bytes.append(b)
        }
        guard bytes[0] & 1 == 0 else { return nil }
        return bytes
    }

    public static func == (lhs: MACAddress, rhs: MACAddress) -> Bool { lhs.rawValue == rhs.rawValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }
}
