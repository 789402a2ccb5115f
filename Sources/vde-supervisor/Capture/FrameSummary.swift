import Glibc
import Shared

/// One line per frame for a capture shown on a terminal: time, where it was seen, MACs,
/// ethertype, and for ARP, IPv4 and IPv6 the addresses, the protocol and its ports or ICMP type;
/// then the frame's length.
///
/// Written by hand: libpcap reads and writes frames but decodes none (tcpdump's printers are
/// not a library, and libwireshark is a dissector framework of hundreds of MiB), and a glance
/// needs only Ethernet, 802.1Q, ARP, IPv4, IPv6, ICMP, TCP and UDP headers: a few fixed offsets.
/// Anything else shows its ethertype or protocol number; for the whole frame, write pcap and
/// read it with Wireshark or `tcpdump -r -`.
enum FrameSummary {
    /// `endpointCapture`: the record's outgoing flag means something (the endpoint sent the
    /// frame: `out`; else `in`); a segment capture shows the switch port the frame entered on.
    /// `utcOffset`: seconds east of UTC, for the time of day.
    static func line(_ record: CaptureRecord, endpointCapture: Bool, utcOffset: Int = 0) -> String {
        var parts = [timeOfDay(record.timestampNanoseconds, utcOffset: utcOffset)]
        if endpointCapture {
            parts.append(record.isOutgoing ? "out" : "in ")
        } else if record.port >= 0 {
            parts.append("port \(record.port)")
        }
        parts.append(ethernet(record.payload))
        return parts.joined(separator: " ") + ", length \(record.originalLength)"
    }

    /// `HH:MM:SS.nnnnnnnnn`.
    static func timeOfDay(_ nanoseconds: Int64, utcOffset: Int) -> String {
        let seconds = nanoseconds.dividedFloor(by: 1_000_000_000) + Int64(utcOffset)
        let fraction = nanoseconds - nanoseconds.dividedFloor(by: 1_000_000_000) * 1_000_000_000
        let day = seconds - seconds.dividedFloor(by: 86400) * 86400
        return pad(day / 3600, 2) + ":" + pad(day / 60 % 60, 2) + ":" + pad(day % 60, 2) + "." + pad(fraction, 9)
    }

    static func ethernet(_ frame: [UInt8]) -> String {
        guard frame.count >= 14 else { return "truncated Ethernet header (\(frame.count) bytes)" }
        var text = mac(frame, at: 6) + " > " + mac(frame, at: 0)
        var type = Int(frame.u16(at: 12))
        var offset = 14
        while type == 0x8100 || type == 0x88a8 {
            guard frame.count >= offset + 4 else { return text + ", vlan truncated" }
            text += ", vlan \(Int(frame.u16(at: offset)) & 0xfff)"
            type = Int(frame.u16(at: offset + 2))
            offset += 4
        }
        switch type {
        case 0x0800: return text + ", IPv4 " + ipv4(frame, at: offset)
        case 0x86dd: return text + ", IPv6 " + ipv6(frame, at: offset)
        case 0x0806: return text + ", ARP " + arp(frame, at: offset)
        default: return text + ", ethertype 0x" + hex(type, 4)
        }
    }

    static func arp(_ frame: [UInt8], at offset: Int) -> String {
        // Ethernet/IPv4 ARP only: hardware type 1, protocol 0x0800, lengths 6 and 4.
        guard frame.count >= offset + 28, frame.u16(at: offset) == 1, frame.u16(at: offset + 2) == 0x0800,
            frame[offset + 4] == 6, frame[offset + 5] == 4
        else { return "(not Ethernet/IPv4, or truncated)" }
        let sender = ipv4Address(frame, at: offset + 14)
        let target = ipv4Address(frame, at: offset + 24)
        switch frame.u16(at: offset + 6) {
        case 1: return "who-has \(target) tell \(sender)"
        case 2: return "\(sender) is-at \(mac(frame, at: offset + 8))"
        case let operation: return "operation \(operation) \(sender) > \(target)"
        }
    }

    static func ipv4(_ frame: [UInt8], at offset: Int) -> String {
        guard frame.count >= offset + 20, frame[offset] >> 4 == 4 else { return "truncated" }
        let headerLength = Int(frame[offset] & 0xf) * 4
        let source = ipv4Address(frame, at: offset + 12)
        let destination = ipv4Address(frame, at: offset + 16)
        let fragment = frame.u16(at: offset + 6)
        // A later fragment (offset > 0) carries no transport header.
        if fragment & 0x1fff != 0 { return "\(source) > \(destination): fragment" }
        guard headerLength >= 20 else { return "\(source) > \(destination): bad header length" }
        let transport = transport(frame, protocol: frame[offset + 9], at: offset + headerLength, icmp: 1)
        return "\(source) > \(destination): " + transport
    }

    static func ipv6(_ frame: [UInt8], at offset: Int) -> String {
        guard frame.count >= offset + 40, frame[offset] >> 4 == 6 else { return "truncated" }
        let source = ipv6Address(frame, at: offset + 8)
        let destination = ipv6Address(frame, at: offset + 24)
        return "\(source) > \(destination): " + transport(frame, protocol: frame[offset + 6], at: offset + 40, icmp: 58)
    }

    /// TCP and UDP with their ports (TCP also its flags), ICMP and ICMPv6 with their type.
    static func transport(_ frame: [UInt8], protocol number: UInt8, at offset: Int, icmp: UInt8) -> String {
        switch number {
        case 6:
            guard frame.count >= offset + 14 else { return "TCP truncated" }
            let flags = frame[offset + 13]
            let names: [(UInt8, String)] = [(0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, ".")]
            let shown = names.filter { flags & $0.0 != 0 }.map(\.1).joined()
            return "TCP \(frame.u16(at: offset)) > \(frame.u16(at: offset + 2)) [\(shown.isEmpty ? "none" : shown)]"
        case 17:
            guard frame.count >= offset + 4 else { return "UDP truncated" }
            return "UDP \(frame.u16(at: offset)) > \(frame.u16(at: offset + 2))"
        case icmp:
            let name = icmp == 1 ? "ICMP" : "ICMP6"
            guard frame.count >= offset + 1 else { return name + " truncated" }
            let type = frame[offset]
            let known: [UInt8: String] =
                icmp == 1
                ? [0: "echo reply", 3: "unreachable", 8: "echo request", 11: "time exceeded"]
                : [
                    1: "unreachable", 3: "time exceeded", 128: "echo request", 129: "echo reply",
                    133: "router solicitation", 134: "router advertisement", 135: "neighbor solicitation",
                    136: "neighbor advertisement", 143: "multicast listener report v2",
                ]
            return name + " " + (known[type] ?? "type \(type)")
        default:
            return "protocol \(number)"
        }
    }

    static func mac(_ frame: [UInt8], at offset: Int) -> String {
        (offset..<offset + 6).map { hex(Int(frame[$0]), 2) }.joined(separator: ":")
    }

    static func ipv4Address(_ frame: [UInt8], at offset: Int) -> String {
        (offset..<offset + 4).map { String(frame[$0]) }.joined(separator: ".")
    }

    /// RFC 5952 text (`fe80::1`), as inet_ntop writes it.
    static func ipv6Address(_ frame: [UInt8], at offset: Int) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let bytes = Array(frame[offset..<offset + 16])
        let done = bytes.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &text, socklen_t(text.count)) }
        guard done != nil else { return "?" }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func hex(_ value: Int, _ width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

extension Array where Element == UInt8 {
    /// The big-endian (network order) u16 at `offset`.
    fileprivate func u16(at offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }
}

extension Int64 {
    fileprivate func dividedFloor(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}
