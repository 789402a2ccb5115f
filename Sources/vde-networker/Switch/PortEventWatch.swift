import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A line vde_switch writes, unasked, on a management connection that asked for it with
/// `debug/add CATEGORY`. Measured on vde_switch 2.3.2 (ports and ids in decimal; the id is the
/// one `port/print` shows as `endpoint ID`):
/// ```
/// 3031 port/ep/+ Port 01 FD  6
/// 3023 port/descr Port 01 FD  6 -> "vde_plug2tap: user=root pid=9643"
/// 3011 hash/+ 02:11:22:33:44:55 VLAN 00:00 Port 1
/// 3032 port/ep/- Port 01 FD  6
/// 3022 port/- 01
/// ```
/// A switch killed with SIGTERM or SIGKILL writes none of them before it dies (measured): its
/// death is learnt from its pidfd, and the connection's end.
enum PortEvent: Sendable, Equatable {
    case endpointAdded(port: Int, id: Int)
    case endpointDescribed(port: Int, id: Int, description: String)
    case endpointRemoved(port: Int, id: Int)
    case portRemoved(port: Int)
    case macLearnt(macAddress: String, port: Int)

    /// What the watch subscribes to. `hash/-` is left out on purpose: a MAC the switch forgets
    /// after its expiry time is still the MAC of a quiet VM, kept until its port closes.
    static let categories = ["port/ep/+", "port/descr", "port/ep/-", "port/-", "hash/+"]

    /// Reads one line (the prompt `vde$ ` and a trailing `\r` already removed); nil for anything else.
    static func parse(_ line: Substring) -> PortEvent? {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard words.count >= 3, words[0].count == 4, words[0].hasPrefix("3"), words[0].allSatisfy(\.isNumber) else {
            return nil
        }
        func number(after label: Substring) -> Int? {
            guard let index = words.firstIndex(of: label), index + 1 < words.count else { return nil }
            return Int(words[index + 1])
        }
        switch words[1] {
        case "port/ep/+", "port/ep/-":
            guard let port = number(after: "Port"), let id = number(after: "FD") else { return nil }
            return words[1] == "port/ep/+" ? .endpointAdded(port: port, id: id) : .endpointRemoved(port: port, id: id)
        case "port/descr":
            guard let port = number(after: "Port"), let id = number(after: "FD"),
                let arrow = line.firstRange(of: " -> ")
            else { return nil }
            var text = line[arrow.upperBound...]
            if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = text.dropFirst().dropLast() }
            return .endpointDescribed(port: port, id: id, description: String(text))
        case "port/-":
            return Int(words[2]).map { .portRemoved(port: $0) }
        case "hash/+":
            guard let mac = MACTable.macAddress(words[2]), let port = number(after: "Port") else { return nil }
            return .macLearnt(macAddress: mac, port: port)
        default:
            return nil
        }
    }
}

/// One management connection kept open to hear of ports coming and going (``PortEvent``), so
/// that the worker knows the switch's external ports when the switch dies, without asking it
/// over and over. Idle, it costs one descriptor in the process's ``DescriptorWatcher``.
final class PortEventWatch: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        var closed = false
    }

    private let socket: UnixSocket
    private let state = Mutex(State())

    private init(socket: UnixSocket) { self.socket = socket }

    /// Connects and subscribes to ``PortEvent/categories`` (one command at a time: the switch
    /// reads one command per read, and drops the rest of a batch, measured). Blocking, within
    /// `timeout` in all.
    static func open(path: String, timeout: Duration) -> Result<PortEventWatch, ManagementError> {
        let deadline = ContinuousClock.now + timeout
        let socket: UnixSocket
        do {
            socket = try UnixSocket.connect(to: path, deadline: deadline)
        } catch {
            return .failure(ManagementError(socketPath: path, reason: "does not answer (connect: \(error.text))"))
        }
        for category in PortEvent.categories {
            let command = "debug/add \(category)"
            do {
                try socket.send(Array((command + "\n").utf8), deadline: deadline)
                let received = try socket.receiveMessage(deadline: deadline, limit: 1 << 16) {
                    commandResult(String(decoding: $0, as: UTF8.self)) != nil
                }
                guard let code = commandResult(String(decoding: received, as: UTF8.self)) else {
                    socket.close()
                    return .failure(ManagementError(socketPath: path, reason: "closed the connection at '\(command)'"))
                }
                guard code == 1000 else {
                    socket.close()
                    return .failure(ManagementError(socketPath: path, reason: "answered '\(command)' with \(code)"))
                }
            } catch {
                socket.close()
                return .failure(ManagementError(socketPath: path, reason: "did not take '\(command)' (\(error.text))"))
            }
        }
        return .success(PortEventWatch(socket: socket))
    }

    /// The code of the first command result line (`1000 Success`, `1022 Invalid argument`) in
    /// `text`; event lines (`3xxx`) that arrive meanwhile are passed over.
    static func commandResult(_ text: String) -> Int? {
        for rawLine in text.split(separator: "\n") {
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            while line.hasPrefix(ManagementReply.prompt) { line = line.dropFirst(ManagementReply.prompt.count) }
            let digits = line.prefix(4)
            guard digits.count == 4, digits.hasPrefix("1"), digits.allSatisfy(\.isNumber), let code = Int(digits) else {
                continue
            }
            return code
        }
        return nil
    }

    /// Hands each batch of events, in order, to `onEvents`, on the descriptor watcher's thread
    /// (keep it short), and calls `onEnd` once when the switch closes the connection.
    func start(
        onEvents: @escaping @Sendable ([PortEvent]) -> Void, onEnd: @escaping @Sendable () -> Void
    ) throws(SystemCallError) {
        guard let watcher = DescriptorWatcher.shared else {
            throw SystemCallError(call: "epoll_create1", errno: EMFILE)
        }
        try arm(watcher, onEvents: onEvents, onEnd: onEnd)
    }

    private func arm(
        _ watcher: DescriptorWatcher, onEvents: @escaping @Sendable ([PortEvent]) -> Void,
        onEnd: @escaping @Sendable () -> Void
    ) throws(SystemCallError) {
        _ = try watcher.watch(socket.fd) { [self] in
            let (events, ended) = readAvailable()
            if !events.isEmpty { onEvents(events) }
            if ended {
                cancel()
                onEnd()
                return
            }
            do {
                try arm(watcher, onEvents: onEvents, onEnd: onEnd)
            } catch {
                cancel()
                onEnd()
            }
        }
    }

    /// What has arrived, as events; `ended` when the peer closed the connection (or it failed).
    private func readAvailable() -> (events: [PortEvent], ended: Bool) {
        state.withLock { state in
            guard !state.closed else { return ([], true) }
            var ended = false
            while true {
                do throws(SystemCallError) {
                    let chunk = try socket.receive(maximum: 16384, deadline: .now)
                    if chunk.isEmpty {
                        ended = true
                        break
                    }
                    state.buffer.append(contentsOf: chunk)
                } catch {
                    // ETIMEDOUT: nothing more for now.
                    ended = error.errno != ETIMEDOUT
                    break
                }
            }
            var events: [PortEvent] = []
            while let newline = state.buffer.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Substring(String(decoding: state.buffer[..<newline], as: UTF8.self))
                state.buffer.removeSubrange(...newline)
                if line.hasSuffix("\r") { line = line.dropLast() }
                while line.hasPrefix(ManagementReply.prompt) { line = line.dropFirst(ManagementReply.prompt.count) }
                if let event = PortEvent.parse(line) { events.append(event) }
            }
            // A prompt without a newline stays; anything else that long is not ours to keep.
            if state.buffer.count > 1 << 16 { state.buffer.removeAll() }
            return (events, ended)
        }
    }

    /// Stops watching and closes the connection; no handler runs afterwards. Idempotent.
    func cancel() {
        state.withLock { state in
            guard !state.closed else { return }
            state.closed = true
            DescriptorWatcher.shared?.forget(socket.fd)
            socket.close()
        }
    }
}
