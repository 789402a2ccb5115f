import Foundation
import Glibc
import Synchronization

/// One sd_notify datagram as it arrived: `READY=1\nSTATUS=...` is one message of two lines.
struct NotifyMessage: Sendable, CustomStringConvertible {
    let time: ContinuousClock.Instant
    let lines: [String]
    var description: String { lines.joined(separator: "\\n") }
}

/// Plays systemd's side of sd_notify: an AF_UNIX SOCK_DGRAM socket bound to a path (give it to
/// the program as NOTIFY_SOCKET), read on a thread of its own, every datagram recorded with
/// the time it arrived.
final class NotifyListener: Sendable {
    let path: String
    private let fd: Int32
    private let received = Mutex<[NotifyMessage]>([])
    private let state = Mutex<(stopRequested: Bool, readerDone: Bool)>((false, false))
    /// Called on the reader thread as each message arrives, for reactions that cannot wait
    /// for a poll (e.g. a signal the instant READY=1 arrives).
    private let onMessage: (@Sendable (NotifyMessage) -> Void)?

    init(path: String, onMessage: (@Sendable (NotifyMessage) -> Void)? = nil) throws {
        self.onMessage = onMessage
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AcceptanceFailure("notify listener: socket(): \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw AcceptanceFailure("notify listener: socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw AcceptanceFailure("notify listener: bind(\(path)): \(String(cString: strerror(e)))")
        }
        // recv wakes up at least every 100 ms, so that the reader notices stop().
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
        self.path = path
        Thread.detachNewThread { [self] in readLoop() }
    }

    /// Every message so far, in arrival order.
    var messages: [NotifyMessage] { received.withLock { $0 } }

    /// Every line so far with its message's arrival time and index.
    var lines: [(index: Int, time: ContinuousClock.Instant, line: String)] {
        messages.enumerated().flatMap { i, m in m.lines.map { (i, m.time, $0) } }
    }

    /// Index of the first message at or after `start` that has a line satisfying `match`.
    func firstIndex(from start: Int = 0, where match: (String) -> Bool) -> Int? {
        let all = messages
        guard start < all.count else { return nil }
        return all[start...].firstIndex { $0.lines.contains(where: match) }
    }

    /// Waits (polling, with a deadline) for a message at or after `start` with a matching line.
    @discardableResult
    func wait(
        for what: String, from start: Int = 0, deadline: Duration = .seconds(20), _ match: @escaping (String) -> Bool
    ) async throws -> Int {
        do {
            return try await Poll.value("sd_notify message: \(what)", deadline: deadline, every: .milliseconds(20)) {
                firstIndex(from: start, where: match)
            }
        } catch {
            throw AcceptanceFailure("\(error)\n  messages so far: \(transcript())")
        }
    }

    /// The messages as text, one per line with times relative to the first, for failure reports.
    func transcript() -> String {
        let all = messages
        guard let first = all.first?.time else { return "(none)" }
        return "\n"
            + all.map { m in
                let ms = (m.time - first).components
                let millis = ms.seconds * 1000 + ms.attoseconds / 1_000_000_000_000_000
                return "    +\(millis) ms  \(m)"
            }.joined(separator: "\n")
    }

    /// Stops the reader, reads whatever is still queued, closes and removes the socket.
    func stop() async {
        state.withLock { $0.stopRequested = true }
        _ = try? await Poll.until("the notify reader thread to stop", deadline: .seconds(5), every: .milliseconds(20)) {
            state.withLock { $0.readerDone }
        }
        if state.withLock({ $0.readerDone }) {
            // Whatever arrived after the reader's last recv.
            while let message = receiveOne(flags: Int32(MSG_DONTWAIT)) { received.withLock { $0.append(message) } }
            close(fd)
        }
        unlink(path)
    }

    private func readLoop() {
        while !state.withLock({ $0.stopRequested }) {
            if let message = receiveOne(flags: 0) {
                onMessage?(message)
                received.withLock { $0.append(message) }
            }
        }
        state.withLock { $0.readerDone = true }
    }

    /// One datagram, or nil on timeout / nothing queued.
    private func receiveOne(flags: Int32) -> NotifyMessage? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, flags) }
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[..<n], as: UTF8.self)
        return NotifyMessage(time: .now, lines: text.split(separator: "\n").map(String.init))
    }
}
