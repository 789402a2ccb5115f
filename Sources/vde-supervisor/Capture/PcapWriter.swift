import CPcap
import Glibc
import Shared

/// Writes frames as a pcap file (nanosecond timestamps, Ethernet) through libpcap's
/// `pcap_dump`, flushed after every frame: a live reader (`| wireshark -k -i -`, `| tcpdump -r -`)
/// sees each frame as it comes, and a full disk or a closed pipe shows up at the frame that met it.
final class PcapWriter {
    private let session: PcapSession
    private let dumper: OpaquePointer
    /// Where it writes, for messages: a path or `stdout`.
    let destination: String

    /// `path` `-`: stdout (SIGPIPE must be ignored: a closed pipe is then EPIPE on the flush).
    init(session: PcapSession, path: String) throws(CaptureError) {
        guard let dumper = path.withCString({ session.pcap.dumpOpen(session.handle, $0) }) else {
            let message = session.pcap.getError(session.handle).map { String(cString: $0) } ?? "cannot open"
            throw CaptureError("cannot write \(path == "-" ? "to stdout" : path): \(message)")
        }
        self.session = session
        self.dumper = dumper
        destination = path == "-" ? "stdout" : path
    }

    deinit { session.pcap.dumpClose(dumper) }

    /// Writes one frame and flushes it out.
    func write(_ header: inout pcap_pkthdr, _ bytes: UnsafePointer<UInt8>) throws(CaptureError) {
        let opaque = UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self)
        session.pcap.dump(opaque, &header, bytes)
        guard session.pcap.dumpFlush(dumper) == 0 else {
            let code = errno
            if code == EPIPE { throw CaptureError("the reader of \(destination) went away", readerGone: true) }
            throw CaptureError("cannot write to \(destination): \(SystemCallError.text(code))")
        }
    }
}
