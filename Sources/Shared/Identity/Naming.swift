/// Names and paths derived from Docker's IDs, in one place so that every process agrees.
public enum Naming {
    /// Docker IDs are 64 hex digits; tests and tools may send shorter ones. Anything outside
    /// this alphabet is refused, because IDs end up in interface names and paths.
    public static func isValidID(_ id: String) -> Bool {
        (1...128).contains(id.utf8.count) && id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)
        }
    }

    /// The short form of an ID that operators see (`docker network ls` shows 12 characters).
    public static func shortID(_ id: String) -> String { String(id.prefix(12)) }

    /// The tap of an endpoint: `vde` plus the start of its ID, 15 characters at most (IFNAMSIZ-1).
    public static func tapName(endpointID: String) -> String { "vde" + String(endpointID.prefix(12)) }

    /// The directory under the run dir that holds one network's own switch sockets.
    public static func networkRunDir(runDir: String, networkID: String) -> String {
        (runDir.hasSuffix("/") ? String(runDir.dropLast()) : runDir) + "/" + shortID(networkID)
    }

    /// A locally administered unicast MAC derived from the endpoint ID (stable across restarts).
    public static func macAddress(endpointID: String) -> String {
        // FNV-1a 64-bit: enough spread for 40 bits of a MAC.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in endpointID.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        var bytes: [UInt8] = [0x02]
        for i in 0..<5 { bytes.append(UInt8(truncatingIfNeeded: hash >> (8 * UInt64(i)))) }
        return bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }

    /// Normalises a MAC to lower-case `aa:bb:cc:dd:ee:ff`, or nil when it is not a unicast MAC.
    public static func normalizedMAC(_ mac: String) -> String? {
        guard let bytes = macBytes(mac) else { return nil }
        return bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }

    /// The six bytes of a unicast MAC address written `aa:bb:cc:dd:ee:ff` (either case), or nil.
    public static func macBytes(_ mac: String) -> [UInt8]? {
        let parts = mac.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, part.allSatisfy(\.isHexDigit), let b = UInt8(part, radix: 16) else { return nil }
            bytes.append(b)
        }
        guard bytes[0] & 1 == 0 else { return nil }
        return bytes
    }
}
