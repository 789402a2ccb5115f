import Shared

/// A CIDR subnet: a network address whose host bits are zero, and a prefix length.
struct Subnet: Hashable, Sendable {
    /// The network address (first address of the subnet).
    let address: IPAddress
    let prefixLength: Int

    /// Builds a subnet; refuses a prefix longer than the family allows and host bits set.
    init(address: IPAddress, prefixLength: Int) throws(IPAMError) {
        let shown = "\(address)/\(prefixLength)"
        guard prefixLength >= 0, prefixLength <= address.bitWidth else {
            throw .invalidSubnet(input: shown, reason: "the prefix length must be 0 to \(address.bitWidth)")
        }
        let mask = Self.mask(bitWidth: address.bitWidth, prefixLength: prefixLength)
        guard address.value & ~mask == 0 else {
            let canonical = IPAddress(v6: address.isV6, value: address.value & mask)
            throw .hostBitsSet(input: shown, canonical: "\(canonical)/\(prefixLength)")
        }
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `10.0.0.0/24` or `fd00::/64`. The prefix length is required and host bits must be zero.
    init(parsing text: String) throws(IPAMError) {
        let parts = text.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw .invalidSubnet(
                input: text, reason: text.isEmpty ? "it is empty" : "it needs exactly one '/prefix-length'")
        }
        let address: IPAddress
        do {
            address = try IPAddress(parsing: String(parts[0]))
        } catch {
            throw .invalidSubnet(input: text, reason: error.reason)
        }
        let prefixText = parts[1]
        guard !prefixText.isEmpty, prefixText.utf8.count <= 3,
            prefixText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let prefix = Int(prefixText), prefix <= address.bitWidth
        else {
            throw .invalidSubnet(
                input: text, reason: "the prefix length must be a number from 0 to \(address.bitWidth)")
        }
        guard prefixText.utf8.count == 1 || prefixText.utf8.first != UInt8(ascii: "0") else {
            throw .invalidSubnet(input: text, reason: "the prefix length has a leading zero")
        }
        do {
            try self.init(address: address, prefixLength: prefix)
        } catch {
            if case .hostBitsSet(_, let canonical) = error { throw .hostBitsSet(input: text, canonical: canonical) }
            throw error
        }
    }

    var isV6: Bool { address.isV6 }

    /// Number of host bits (32 or 128 minus the prefix length).
    var hostBits: Int { address.bitWidth - prefixLength }

    /// The netmask as a number of the family's width.
    var mask: UInt128 { Self.mask(bitWidth: address.bitWidth, prefixLength: prefixLength) }

    /// The network address.
    var first: IPAddress { address }

    /// The last address (the IPv4 broadcast address for prefixes up to /30).
    var last: IPAddress { IPAddress(v6: isV6, value: address.value | lastOffset) }

    /// Offset of the last address from the first: the size minus one (always representable).
    var lastOffset: UInt128 { hostBits == 0 ? 0 : UInt128.max >> (128 - hostBits) }

    /// Number of addresses; saturates at `UInt128.max` for `::/0`, which has 2^128.
    var size: UInt128 { hostBits >= 128 ? UInt128.max : UInt128(1) << hostBits }

    func contains(_ other: IPAddress) -> Bool {
        other.isV6 == isV6 && other.value & mask == address.value
    }

    /// True when every address of `other` lies in this subnet.
    func contains(_ other: Subnet) -> Bool {
        other.isV6 == isV6 && other.prefixLength >= prefixLength && contains(other.address)
    }

    /// The mask with the top `prefixLength` bits of a `bitWidth`-bit number set.
    static func mask(bitWidth: Int, prefixLength: Int) -> UInt128 {
        let all = bitWidth == 128 ? UInt128.max : (UInt128(1) << bitWidth) - 1
        // `<<` on integers is a "smart shift": shifting by the full width yields 0.
        return (all << (bitWidth - prefixLength)) & all
    }
}

extension Subnet: CustomStringConvertible {
    var description: String { "\(address)/\(prefixLength)" }
}

extension Subnet: Codable {
    /// Stored as its CIDR text.
    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do {
            self = try Subnet(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.vdeError.message)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
