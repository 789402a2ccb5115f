import Shared
import Synchronization

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The switch's capture plugin in the fake lab: it takes the management commands the worker
/// sends, and on `vdecapture/start` connects to the worker's sink, as the real plugin does, so
/// that a test writes the "switch's frames" into ``sink``.
struct FakeCapturePlugin {
    static let path = "/fake/lib/vde-capture.so"

    var loaded = false
    var commands: [String] = []
    /// The plugin's end of the sink connection (-1: none).
    var sink: Int32 = -1
    var dropped: UInt64 = 0
    /// Endpoint captures' sources, by MAC address, with the namespace each was opened in.
    var frameSources: [MACAddress: (namespace: String?, source: FakeFrameSource)] = [:]
    /// Opening a frame source fails while set.
    var frameSourceFailure: CaptureError?

    /// Writes `records` into the sink as the plugin would (each whole). Returns how many went
    /// out; once the sink stays full for 100 ms the rest are dropped, as the plugin drops.
    @discardableResult
    func send(_ records: [CaptureRecord]) -> Int {
        var sent = 0
        for record in records {
            let bytes = record.bytes
            var out = pollfd(fd: sink, events: Int16(POLLOUT), revents: 0)
            guard poll(&out, 1, 100) == 1 else { break }
            let result = bytes.withUnsafeBytes {
                Glibc.send(sink, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if result == bytes.count { sent += 1 }
        }
        return sent
    }
}

/// An endpoint capture's frames from a datagram socket pair: the test writes frames into
/// ``feed``; the capture reads the other end.
final class FakeFrameSource: FrameSource, @unchecked Sendable {
    let fd: Int32
    let feed: Int32
    let drops = Mutex<UInt64>(0)
    private let closed = Mutex(false)

    init() {
        var pair: [Int32] = [-1, -1]
        let made = socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair)
        precondition(made == 0, "socketpair: \(errno)")
        fd = pair[0]
        feed = pair[1]
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    var isClosed: Bool { closed.withLock { $0 } }

    /// Queues a frame as the kernel would: one that does not fit is dropped and counted.
    func write(_ frame: [UInt8]) {
        let sent = frame.withUnsafeBytes { Glibc.send(feed, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if sent < 0 { drops.withLock { $0 += 1 } }
    }

    func nextFrame() throws(SystemCallError) -> CaptureRecord? {
        var buffer = [UInt8](repeating: 0, count: 2048)
        let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if received < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw .last("recv", "fake source")
        }
        return CaptureRecord(
            flags: buffer[0] == 0xff ? CaptureRecord.outgoingFlag : 0, timestampNanoseconds: 1,
            payload: Array(buffer[0..<received]))
    }

    func takeDrops() -> UInt64 {
        drops.withLock { value in
            defer { value = 0 }
            return value
        }
    }

    func close() {
        let already = closed.withLock { value in
            defer { value = true }
            return value
        }
        guard !already else { return }
        Glibc.close(fd)
        Glibc.close(feed)
    }
}

extension FakeLab {
    var capturePlugin: FakeCapturePlugin { with { $0.capturePlugin } }

    func openFrameSource(_ namespace: String?, _ macAddress: MACAddress) throws -> any FrameSource {
        let outcome = with { state -> Result<FakeFrameSource, CaptureError> in
            if let failure = state.capturePlugin.frameSourceFailure { return .failure(failure) }
            let source = FakeFrameSource()
            state.capturePlugin.frameSources[macAddress] = (namespace, source)
            return .success(source)
        }
        return try outcome.get()
    }
}

extension FakeManagement {
    func run(_ commands: [String]) async throws(ManagementError) -> [ManagementReply] {
        commands.map { command in
            lab.with { state -> ManagementReply in
                state.capturePlugin.commands.append(command)
                let words = command.split(separator: " ", maxSplits: 1).map(String.init)
                let ok = ManagementReply(code: 1000, message: "Success", data: [])
                let refused = ManagementReply(code: 1022, message: "Invalid argument", data: [])
                switch words[0] {
                case "plugin/list":
                    return ManagementReply(
                        code: 1000, message: "Success",
                        data: ["NAME                   HELP", "------------           ----"]
                            + (state.capturePlugin.loaded ? ["vdecapture             copy every frame"] : []))
                case "plugin/add":
                    state.capturePlugin.loaded = true
                    return ok
                case "plugin/del":
                    state.capturePlugin.loaded = false
                    return ok
                case "vdecapture/start":
                    guard state.capturePlugin.loaded, words.count > 1 else { return refused }
                    if state.capturePlugin.sink >= 0 { close(state.capturePlugin.sink) }
                    state.capturePlugin.sink = (try? UnixSocket.connect(to: words[1], timeout: .seconds(1)))?.fd ?? -1
                    return ok
                case "vdecapture/stop":
                    guard state.capturePlugin.loaded else { return refused }
                    if state.capturePlugin.sink >= 0 { close(state.capturePlugin.sink) }
                    state.capturePlugin.sink = -1
                    return ok
                case "vdecapture/stats":
                    guard state.capturePlugin.loaded else { return refused }
                    return ManagementReply(
                        code: 1000, message: "Success",
                        data: [
                            "active=\(state.capturePlugin.sink >= 0 ? 1 : 0) frames=0 dropped=\(state.capturePlugin.dropped) stopped=-"
                        ])
                default:
                    return refused
                }
            }
        }
    }
}
