/// An IPv4 or IPv6 address held as a number, parsed strictly and printed canonically
/// (IPv6 per RFC 5952). The one address reader of both processes: the supervisor's IPAM and
/// address checks, and ``IPv4Address`` of the worker protocol.
public enum IPAddress: Hashable, Sendable {
    case v4(UInt32)
    case v6(UInt128)

    public var isV6: Bool {
        if case .v6 = self { return true }
        return false
    }

    /// 32 for IPv4, 128 for IPv6.
    public var bitWidth: Int { isV6 ? 128 : 32 }

    /// The address as an unsigned number; IPv4 occupies the low 32 bits.
    public var value: UInt128 {
        switch self {
        case .v4(let v): return UInt128(v)
        case .v6(let v): return v
        }
    }

    /// The address of the given family whose number is `value` (truncated to 32 bits for IPv4).
    public init(v6: Bool, value: UInt128) {
        self = v6 ? .v6(value) : .v4(UInt32(truncatingIfNeeded: value))
    }

    /// Parses dotted-quad IPv4 (`10.0.0.1`, no leading zeros) or IPv6 (`fd00::1`, also with
    /// a trailing dotted quad as in `::ffff:10.0.0.1`). Zone indices (`%eth0`) are refused.
    public init(parsing text: String) throws(AddressParseError) {
        let bytes = Array(text.utf8)
        func fail(_ reason: String) -> AddressParseError { AddressParseError(input: text, reason: reason) }
        guard !bytes.isEmpty else { throw fail("it is empty") }
        guard bytes.count <= Self.maxTextLength else { throw fail("it is too long") }
        if bytes.contains(UInt8(ascii: ":")) {
            guard !bytes.contains(UInt8(ascii: "%")) else { throw fail("zone indices (%...) are not supported") }
            switch Self.parseV6(bytes[...]) {
            case .success(let v): self = .v6(v)
            case .failure(let reason): throw fail(reason.text)
            }
        } else if bytes.contains(UInt8(ascii: ".")) {
            switch Self.parseV4(bytes[...]) {
            case .success(let v): self = .v4(v)
            case .failure(let reason): throw fail(reason.text)
            }
        } else {
            throw fail("expected IPv4 (a.b.c.d) or IPv6 (x:x::x) notation")
        }
    }

    /// Longest accepted text: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255` has 45 characters.
    public static let maxTextLength = 45

    /// The reason a parse failed, as a value so that the parsers can return it in a `Result`.
    public struct ParseFailure: Error {
        public var text: String
        init(_ text: String) { self.text = text }
    }

    /// Four decimal numbers 0...255 separated by dots, without leading zeros (they would be
    /// ambiguous: some tools read them as octal).
    public static func parseV4(_ bytes: ArraySlice<UInt8>) -> Result<UInt32, ParseFailure> {
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return .failure(.init("an IPv4 address has four numbers separated by dots")) }
        var result: UInt32 = 0
        for part in parts {
            let shown = String(decoding: part.prefix(8), as: UTF8.self)
            guard !part.isEmpty else { return .failure(.init("an IPv4 address has four numbers separated by dots")) }
            guard part.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                return .failure(.init("'\(shown)' is not a decimal number"))
            }
            guard part.count <= 3 else { return .failure(.init("'\(shown)' is larger than 255")) }
            guard part.count == 1 || part.first != UInt8(ascii: "0") else {
                return .failure(.init("'\(shown)' has a leading zero"))
            }
            let n = part.reduce(UInt32(0)) { $0 * 10 + UInt32($1 - UInt8(ascii: "0")) }
            guard n <= 255 else { return .failure(.init("'\(shown)' is larger than 255")) }
            result = result << 8 | n
        }
        return .success(result)
    }

    /// Eight groups of one to four hex digits, one `::` standing for one or more zero groups,
    /// and optionally a dotted quad in place of the last two groups.
    public static func parseV6(_ bytes: ArraySlice<UInt8>) -> Result<UInt128, ParseFailure> {
        let colon = UInt8(ascii: ":")
        // Locate the one allowed "::".
        var doubleColon: Int? = nil
        var i = bytes.startIndex
        while i < bytes.endIndex - 1 {
            if bytes[i] == colon && bytes[i + 1] == colon {
                guard doubleColon == nil else { return .failure(.init("'::' may appear only once")) }
                doubleColon = i
                i += 2
                if i < bytes.endIndex && bytes[i] == colon { return .failure(.init("':::' is not allowed")) }
            } else {
                i += 1
            }
        }
        let head: ArraySlice<UInt8>
        let tail: ArraySlice<UInt8>
        if let dc = doubleColon {
            head = bytes[bytes.startIndex..<dc]
            tail = bytes[(dc + 2)...]
        } else {
            head = bytes
            tail = []
        }
        let headGroups: [UInt16]
        let tailGroups: [UInt16]
        switch groups(head, mayEndWithV4: doubleColon == nil) {
        case .success(let g): headGroups = g
        case .failure(let f): return .failure(f)
        }
        switch groups(tail, mayEndWithV4: true) {
        case .success(let g): tailGroups = g
        case .failure(let f): return .failure(f)
        }
        let count = headGroups.count + tailGroups.count
        if doubleColon == nil {
            guard count == 8 else { return .failure(.init("an IPv6 address has eight groups (or uses '::')")) }
        } else {
            guard count <= 7 else { return .failure(.init("too many groups for an IPv6 address with '::'")) }
        }
        let all = headGroups + Array(repeating: 0, count: 8 - count) + tailGroups
        return .success(all.reduce(UInt128(0)) { $0 << 16 | UInt128($1) })
    }

    /// The colon-separated groups of one side of `::` (empty input: no groups).
    private static func groups(_ bytes: ArraySlice<UInt8>, mayEndWithV4: Bool) -> Result<[UInt16], ParseFailure> {
        guard !bytes.isEmpty else { return .success([]) }
        let parts = bytes.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        var out: [UInt16] = []
        for (index, part) in parts.enumerated() {
            let shown = String(decoding: part.prefix(16), as: UTF8.self)
            guard !part.isEmpty else {
                return .failure(.init("empty group (a single ':' at the start or end, or ':' where '::' was meant)"))
            }
            if part.contains(UInt8(ascii: ".")) {
                guard mayEndWithV4, index == parts.count - 1 else {
                    return .failure(.init("a dotted IPv4 part may only end an IPv6 address"))
                }
                switch parseV4(part) {
                case .success(let v4):
                    out.append(UInt16(v4 >> 16))
                    out.append(UInt16(v4 & 0xffff))
                case .failure(let f):
                    return .failure(f)
                }
                continue
            }
            guard part.count <= 4 else { return .failure(.init("group '\(shown)' has more than four hex digits")) }
            var group: UInt16 = 0
            for c in part {
                guard let d = hexDigit(c) else { return .failure(.init("group '\(shown)' is not hexadecimal")) }
                group = group << 4 | UInt16(d)
            }
            out.append(group)
        }
        return .success(out)
    }

    private static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

extension IPAddress: CustomStringConvertible {
    /// Dotted quad for IPv4; RFC 5952 for IPv6: lower case, no leading zeros, the longest run
    /// (the first of equally long ones) of two or more zero groups shortened to `::`.
    /// IPv4-mapped addresses are printed in hex form (`::ffff:a00:1`).
    public var description: String {
        switch self {
        case .v4(let v):
            return "\(v >> 24).\(v >> 16 & 0xff).\(v >> 8 & 0xff).\(v & 0xff)"
        case .v6(let v):
            let groups = (0..<8).map { UInt16(truncatingIfNeeded: v >> (16 * (7 - $0))) }
            var bestStart = -1
            var bestLength = 0
            var runStart = -1
            for (i, g) in groups.enumerated() {
                if g == 0 {
                    if runStart < 0 { runStart = i }
                    let length = i - runStart + 1
                    if length > bestLength {
                        bestStart = runStart
                        bestLength = length
                    }
                } else {
                    runStart = -1
                }
            }
            func hex(_ range: Range<Int>) -> String {
                groups[range].map { String($0, radix: 16) }.joined(separator: ":")
            }
            guard bestLength >= 2 else { return hex(0..<8) }
            return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
        }
    }
}

extension IPAddress: Comparable {
    /// IPv4 before IPv6, then by number.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        if lhs.isV6 != rhs.isV6 { return !lhs.isV6 }
        return lhs.value < rhs.value
    }
}

extension IPAddress: Codable {
    /// Stored as its canonical text, so that the state file is readable.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do {
            self = try IPAddress(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.vdeError.message)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Text that is not an IPv4 or IPv6 address: the text and why.
public struct AddressParseError: ReportableError, Equatable {
    public var input: String
    public var reason: String

    public init(input: String, reason: String) {
        self.input = input
        self.reason = reason
    }

    public var vdeError: VDEError {
        .invalid("'\(UntrustedText(input))' is not a valid IP address: \(UntrustedText(reason))")
    }
}

/// An IPv4 address without prefix length (`10.0.0.5`), as the worker announces it by ARP after
/// a re-plug; read by ``IPAddress``'s parser.
public struct IPv4Address: CheckedString {
    public let rawValue: String
    public let value: UInt32

    public init(_ text: String) throws(VDEError) {
        guard text.utf8.count <= 15 else { throw AddressParseError(input: text, reason: "it is too long").vdeError }
        switch IPAddress.parseV4(Array(text.utf8)[...]) {
        case .success(let value):
            self.value = value
            rawValue = IPAddress.v4(value).description
        case .failure(let failure):
            throw AddressParseError(input: text, reason: failure.text).vdeError
        }
    }
}
