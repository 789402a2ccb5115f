import CPcap
import Glibc
import Shared

/// libpcap, loaded with dlopen when `vde-supervisor capture` runs, for the two things it does
/// that we must not write again: BPF (tcpdump's filter language, compiled and run on each
/// frame) and the pcap file format that Wireshark and tcpdump read.
///
/// Not linked: linking it made every `vde-supervisor` process map libpcap and its nine
/// dependent libraries (+1.0 MiB PSS measured in a lone process), and the daemon runs for
/// months without ever capturing. Only the functions below are looked up, each with its C type.
final class LibPcap {
    typealias OpenDead = @convention(c) (Int32, Int32, UInt32) -> OpaquePointer?
    typealias Close = @convention(c) (OpaquePointer?) -> Void
    typealias GetError = @convention(c) (OpaquePointer?) -> UnsafeMutablePointer<CChar>?
    typealias Compile =
        @convention(c) (
            OpaquePointer?, UnsafeMutablePointer<bpf_program>?, UnsafePointer<CChar>?, Int32, UInt32
        ) -> Int32
    typealias FreeCode = @convention(c) (UnsafeMutablePointer<bpf_program>?) -> Void
    typealias OfflineFilter =
        @convention(c) (
            UnsafePointer<bpf_program>?, UnsafePointer<pcap_pkthdr>?, UnsafePointer<UInt8>?
        ) -> Int32
    typealias DumpOpen = @convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> OpaquePointer?
    typealias Dump =
        @convention(c) (UnsafeMutablePointer<UInt8>?, UnsafePointer<pcap_pkthdr>?, UnsafePointer<UInt8>?)
        -> Void
    typealias DumpFlush = @convention(c) (OpaquePointer?) -> Int32
    typealias DumpClose = @convention(c) (OpaquePointer?) -> Void

    /// Debian's soname for libpcap 1.x (the `.so` without a number comes only with libpcap-dev).
    static let sonames = ["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"]

    let openDead: OpenDead
    let close: Close
    let getError: GetError
    let compile: Compile
    let freeCode: FreeCode
    let offlineFilter: OfflineFilter
    let dumpOpen: DumpOpen
    let dump: Dump
    let dumpFlush: DumpFlush
    let dumpClose: DumpClose
    private let handle: UnsafeMutableRawPointer

    /// Loads the first of ``sonames`` that opens and looks up every function.
    static func load() throws(CaptureError) -> LibPcap {
        var errors: [String] = []
        for name in sonames {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                errors.append(dlerror().map { String(cString: $0) } ?? name)
                continue
            }
            do {
                return try LibPcap(handle: handle)
            } catch {
                dlclose(handle)
                errors.append(error.message)
            }
        }
        throw CaptureError(
            "cannot load libpcap (install the libpcap0.8 package): " + errors.joined(separator: "; "))
    }

    private init(handle: UnsafeMutableRawPointer) throws(CaptureError) {
        func symbol<T>(_ name: String, as type: T.Type) throws(CaptureError) -> T {
            guard let pointer = dlsym(handle, name) else {
                throw CaptureError("libpcap has no \(name)")
            }
            return unsafeBitCast(pointer, to: type)
        }
        self.handle = handle
        openDead = try symbol("pcap_open_dead_with_tstamp_precision", as: OpenDead.self)
        close = try symbol("pcap_close", as: Close.self)
        getError = try symbol("pcap_geterr", as: GetError.self)
        compile = try symbol("pcap_compile", as: Compile.self)
        freeCode = try symbol("pcap_freecode", as: FreeCode.self)
        offlineFilter = try symbol("pcap_offline_filter", as: OfflineFilter.self)
        dumpOpen = try symbol("pcap_dump_open", as: DumpOpen.self)
        dump = try symbol("pcap_dump", as: Dump.self)
        dumpFlush = try symbol("pcap_dump_flush", as: DumpFlush.self)
        dumpClose = try symbol("pcap_dump_close", as: DumpClose.self)
    }

    deinit { dlclose(handle) }
}

/// A "dead" pcap handle for Ethernet frames with nanosecond timestamps: what BPF programs are
/// compiled for and what the pcap file's header says (link type EN10MB, nanosecond magic).
final class PcapSession {
    let pcap: LibPcap
    let handle: OpaquePointer
    let snaplen: Int

    init(pcap: LibPcap, snaplen: Int) throws(CaptureError) {
        guard let handle = pcap.openDead(DLT_EN10MB, Int32(snaplen), UInt32(PCAP_TSTAMP_PRECISION_NANO)) else {
            throw CaptureError("libpcap could not make a handle for Ethernet frames")
        }
        self.pcap = pcap
        self.handle = handle
        self.snaplen = snaplen
    }

    deinit { pcap.close(handle) }

    /// Compiles a tcpdump filter expression (optimized); libpcap's own message when it is not one.
    func compile(_ expression: String) throws(CaptureError) -> PcapFilter {
        let program = UnsafeMutablePointer<bpf_program>.allocate(capacity: 1)
        program.initialize(to: bpf_program())
        let result = expression.withCString { pcap.compile(handle, program, $0, 1, PCAP_NETMASK_UNKNOWN) }
        guard result == 0 else {
            program.deallocate()
            let message = pcap.getError(handle).map { String(cString: $0) } ?? "cannot compile"
            throw CaptureError("bad filter '\(UntrustedText(expression))': \(message)")
        }
        return PcapFilter(session: self, program: program)
    }
}

/// A compiled BPF program, run on each frame by `pcap_offline_filter`.
final class PcapFilter {
    private let session: PcapSession
    private let program: UnsafeMutablePointer<bpf_program>

    fileprivate init(session: PcapSession, program: UnsafeMutablePointer<bpf_program>) {
        self.session = session
        self.program = program
    }

    deinit {
        session.pcap.freeCode(program)
        program.deallocate()
    }

    /// True when the frame (its first `header.caplen` bytes) matches.
    func matches(_ header: inout pcap_pkthdr, _ bytes: UnsafePointer<UInt8>) -> Bool {
        session.pcap.offlineFilter(program, &header, bytes) != 0
    }
}
