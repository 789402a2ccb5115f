import Shared
import Testing

@testable import vde_supervisor

/// The line per frame a capture shows on a terminal, on frames built byte by byte.
struct CaptureSummaryTests {
    static let a: [UInt8] = [0x02, 0x42, 0x0a, 0, 0, 2]
    static let b: [UInt8] = [0x02, 0x42, 0x0a, 0, 0, 3]
    /// 2026-12-02 03:04:05.000000042 UTC.
    static let time: Int64 = 1_796_180_645 * 1_000_000_000 + 42

    static func ethernet(_ type: UInt16, _ payload: [UInt8], to destination: [UInt8] = b) -> [UInt8] {
        destination + a + [UInt8(type >> 8), UInt8(type & 0xff)] + payload
    }

    static func ipv4(protocol number: UInt8, _ transport: [UInt8]) -> [UInt8] {
        let length = 20 + transport.count
        return [
            0x45, 0, UInt8(length >> 8), UInt8(length & 0xff), 0, 1, 0x40, 0, 64, number, 0, 0, 10, 0, 0, 2, 10, 0, 0,
            3,
        ]
            + transport
    }

    static func line(_ frame: [UInt8], flags: UInt16 = 0, port: Int32 = 3, endpoint: Bool = false) -> String {
        FrameSummary.line(
            CaptureRecord(flags: flags, port: port, timestampNanoseconds: time, payload: frame),
            endpointCapture: endpoint)
    }

    @Test func anIcmpEchoRequestShowsPortMacsAddressesTypeAndLength() {
        let frame = Self.ethernet(0x0800, Self.ipv4(protocol: 1, [8, 0, 0, 0, 0, 1, 0, 1]))
        #expect(
            Self.line(frame)
                == "03:04:05.000000042 port 3 02:42:0a:00:00:02 > 02:42:0a:00:00:03, IPv4 10.0.0.2 > 10.0.0.3: "
                + "ICMP echo request, length 42")
    }

    @Test func anEndpointCaptureSaysWhetherTheEndpointSentOrReceivedTheFrame() {
        let reply = Self.ethernet(0x0800, Self.ipv4(protocol: 1, [0, 0, 0, 0]))
        #expect(
            Self.line(reply, flags: CaptureRecord.outgoingFlag, endpoint: true).hasPrefix(
                "03:04:05.000000042 out 02:42"))
        #expect(Self.line(reply, endpoint: true).contains(" in  02:42"))
        #expect(Self.line(reply, endpoint: true).contains("ICMP echo reply"))
    }

    @Test func arpRequestsAndRepliesReadAsTcpdumpWritesThem() {
        let broadcast: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        let request = Self.ethernet(
            0x0806, [0, 1, 8, 0, 6, 4, 0, 1] + Self.a + [10, 0, 0, 2] + [0, 0, 0, 0, 0, 0] + [10, 0, 0, 3],
            to: broadcast)
        #expect(
            Self.line(request, port: -1)
                == "03:04:05.000000042 02:42:0a:00:00:02 > ff:ff:ff:ff:ff:ff, ARP who-has 10.0.0.3 tell 10.0.0.2, length 42"
        )
        let reply = Self.ethernet(0x0806, [0, 1, 8, 0, 6, 4, 0, 2] + Self.a + [10, 0, 0, 2] + Self.b + [10, 0, 0, 3])
        #expect(Self.line(reply).contains("ARP 10.0.0.2 is-at 02:42:0a:00:00:02"))
    }

    @Test func tcpShowsPortsAndFlagsAndUdpItsPorts() {
        var tcp = [UInt8](repeating: 0, count: 20)
        tcp[0] = 0xc3
        tcp[1] = 0x50  // 50000
        tcp[3] = 80
        tcp[13] = 0x12  // SYN ACK
        #expect(Self.line(Self.ethernet(0x0800, Self.ipv4(protocol: 6, tcp))).contains("TCP 50000 > 80 [S.]"))
        let udp: [UInt8] = [0, 53, 0x13, 0x88, 0, 8, 0, 0]
        #expect(Self.line(Self.ethernet(0x0800, Self.ipv4(protocol: 17, udp))).contains("UDP 53 > 5000"))
    }

    @Test func ipv6AddressesAreCompressedAndIcmp6TypesNamed() {
        var header: [UInt8] = [0x60, 0, 0, 0, 0, 8, 58, 255]
        header += [0xfe, 0x80] + [UInt8](repeating: 0, count: 13) + [1]
        header += [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [2]
        let frame = Self.ethernet(0x86dd, header + [135, 0, 0, 0, 0, 0, 0, 0])
        #expect(Self.line(frame).contains("IPv6 fe80::1 > fd00::2: ICMP6 neighbor solicitation"))
    }

    @Test func aVlanTagIsShownAndSkipped() {
        let inner = [0, 42, 0x08, 0x00] + Self.ipv4(protocol: 17, [0, 1, 0, 2, 0, 8, 0, 0])
        #expect(Self.line(Self.ethernet(0x8100, inner)).contains("vlan 42, IPv4 10.0.0.2 > 10.0.0.3: UDP 1 > 2"))
    }

    @Test func unknownAndTruncatedFramesSayWhatTheyAreWithoutReadingPastTheEnd() {
        #expect(Self.line(Self.ethernet(0x88cc, [1, 2, 3])).contains("ethertype 0x88cc"))
        #expect(Self.line([1, 2, 3]).contains("truncated Ethernet header (3 bytes)"))
        #expect(Self.line(Self.ethernet(0x0800, [0x45, 0, 0])).contains("IPv4 truncated"))
        #expect(Self.line(Self.ethernet(0x0800, Self.ipv4(protocol: 6, [0, 1]))).contains("TCP truncated"))
        #expect(Self.line(Self.ethernet(0x0806, [0, 1])).contains("ARP (not Ethernet/IPv4, or truncated)"))
        #expect(Self.line(Self.ethernet(0x86dd, [0x60])).contains("IPv6 truncated"))
    }

    @Test func timesOfDayFollowTheOffsetAndWrapAtMidnight() {
        #expect(FrameSummary.timeOfDay(Self.time, utcOffset: 3600) == "04:04:05.000000042")
        #expect(FrameSummary.timeOfDay(Self.time, utcOffset: -4 * 3600) == "23:04:05.000000042")
    }
}
