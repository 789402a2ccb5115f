import CPcap
import Glibc
import Shared
import Testing

@testable import vde_supervisor

/// libpcap as the capture command loads it (dlopen): filters compile or fail with libpcap's
/// message, run on hand-made frames, and frames are written as nanosecond pcap.
struct CaptureFilterTests {
    static func session() throws -> PcapSession {
        try PcapSession(pcap: LibPcap.load(), snaplen: CaptureArguments.maxSnaplen)
    }

    static let icmpFrame: [UInt8] =
        [0x02, 0x42, 0x0a, 0, 0, 3, 0x02, 0x42, 0x0a, 0, 0, 2, 0x08, 0x00]
        + [0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 3] + [8, 0, 0, 0, 0, 1, 0, 1]

    static func header(_ frame: [UInt8]) -> pcap_pkthdr {
        pcap_pkthdr(
            ts: timeval(tv_sec: 1_796_180_645, tv_usec: 42), caplen: UInt32(frame.count), len: UInt32(frame.count))
    }

    static func matches(_ filter: PcapFilter, _ frame: [UInt8]) -> Bool {
        var header = header(frame)
        return frame.withUnsafeBufferPointer { bytes in bytes.baseAddress.map { filter.matches(&header, $0) } ?? false }
    }

    @Test func aBadFilterFailsWithLibpcapsMessageNamingTheExpression() throws {
        let session = try Self.session()
        #expect {
            _ = try session.compile("icmp and and")
        } throws: { error in
            let message = (error as? CaptureError)?.message ?? ""
            return message.contains("bad filter 'icmp and and'") && message.contains("syntax error")
        }
        #expect(throws: CaptureError.self) { _ = try session.compile("port 99999999") }
    }

    @Test func aFilterKeepsOnlyMatchingFrames() throws {
        let session = try Self.session()
        let icmp = try session.compile("icmp")
        let arp = try session.compile("arp")
        let host = try session.compile("src host 10.0.0.2 and dst host 10.0.0.3")
        #expect(Self.matches(icmp, Self.icmpFrame))
        #expect(!Self.matches(arp, Self.icmpFrame))
        #expect(Self.matches(host, Self.icmpFrame))
    }

    @Test func framesAreWrittenAsNanosecondEthernetPcap() throws {
        let session = try Self.session()
        let path = "/tmp/vde-capture-test-\(getpid()).pcap"
        defer { unlink(path) }
        do {
            let writer = try PcapWriter(session: session, path: path)
            var header = Self.header(Self.icmpFrame)
            try Self.icmpFrame.withUnsafeBufferPointer { bytes in
                if let base = bytes.baseAddress { try writer.write(&header, base) }
            }
        }
        let bytes = try FileSystem.read(path, limit: 4096)
        // The nanosecond magic 0xa1b23c4d in this host's order (little-endian), link type 1 (EN10MB).
        #expect(Array(bytes.prefix(4)) == [0x4d, 0x3c, 0xb2, 0xa1])
        #expect(bytes[20] == 1)
        #expect(bytes.count == 24 + 16 + Self.icmpFrame.count)
        // The record's fraction is the 42 ns given.
        #expect(bytes[28] == 42)
        #expect(Array(bytes.suffix(Self.icmpFrame.count)) == Self.icmpFrame)
    }

    @Test func aFileThatCannotBeOpenedIsRefusedWithItsPath() throws {
        let session = try Self.session()
        #expect {
            _ = try PcapWriter(session: session, path: "/nonexistent-dir/x.pcap")
        } throws: { error in
            ((error as? CaptureError)?.message ?? "").contains("cannot write /nonexistent-dir/x.pcap")
        }
    }
}
