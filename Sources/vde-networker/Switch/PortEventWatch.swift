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
    private let state: Mutex<State>

    private init(socket: UnixSocket, received: [UInt8]) {
        self.socket = socket
        state = Mutex(State(buffer: received))
    }

    /// Connects and subscribes to ``PortEvent/categories`` (one command at a time: the switch
    /// reads one command per read, and drops the rest of a batch, measured). Blocking, within
    /// `timeout` in all. What arrives after the replies (events already) is kept for ``start``.
    static func open(path: String, timeout: Duration) -> Result<PortEventWatch, ManagementError> {
        let deadline = ContinuousClock.now + timeout
        let socket: UnixSocket
        do {
            socket = try UnixSocket.connect(to: path, deadline: deadline)
        } catch {
            return .failure(ManagementError(socketPath: path, reason: "does not answer (connect: \(error.text))"))
        }
        var buffer: [UInt8] = []
        for category in PortEvent.categories {
            let command = "debug/add \(category)"
            func failure(_ reason: String) -> Result<PortEventWatch, ManagementError> {
                socket.close()
                return .failure(ManagementError(socketPath: path, reason: reason))
            }
            do throws(SystemCallError) {
                try socket.send(Array((command + "\n").utf8), deadline: deadline)
                var code = takeCommandResult(&buffer)
                while code == nil {
                    let chunk = try socket.receive(maximum: 4096, deadline: deadline)
                    if chunk.isEmpty { return failure("closed the connection at '\(command)'") }
                    buffer.append(contentsOf: chunk)
                    if buffer.count > 1 << 16 { return failure("sent too much without answering '\(command)'") }
                    code = takeCommandResult(&buffer)
                }
                guard code == 1000 else { return failure("answered '\(command)' with \(code ?? 0)") }
            } catch {
                return failure("did not take '\(command)' (\(error.text))")
            }
        }
        return .success(PortEventWatch(socket: socket, received: buffer))
    }

    /// Removes from `buffer` its first complete command result line (`1000 Success`,
    /// `1022 Invalid argument`, after any `vde$ ` prompts) and returns its code; nil while none
    /// has arrived. The banner and event lines (`3xxx`) stay.
    static func takeCommandResult(_ buffer: inout [UInt8]) -> Int? {
        var start = buffer.startIndex
        while let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var line = Substring(String(decoding: buffer[start..<newline], as: UTF8.self))
            while line.hasPrefix(ManagementReply.prompt) { line = line.dropFirst(ManagementReply.prompt.count) }
            let digits = line.prefix(4)
            if digits.count == 4, digits.hasPrefix("1"), digits.allSatisfy(\.isNumber), let code = Int(digits) {
                buffer.removeSubrange(start...newline)
                return code
            }
            start = newline + 1
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
        let already = state.withLock { Self.takeEvents(&$0.buffer) }
        if !already.isEmpty { onEvents(already) }
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
                    let chunk = try socket.receive(maximum: 4096, deadline: .now)
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
            return (Self.takeEvents(&state.buffer), ended)
        }
    }

    /// The events of the complete lines in `buffer`, which keeps an incomplete last line.
    private static func takeEvents(_ buffer: inout [UInt8]) -> [PortEvent] {
        var events: [PortEvent] = []
        while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            var line = Substring(String(decoding: buffer[..<newline], as: UTF8.self))
            buffer.removeSubrange(...newline)
            if line.hasSuffix("\r") { line = line.dropLast() }
            while line.hasPrefix(ManagementReply.prompt) { line = line.dropFirst(ManagementReply.prompt.count) }
            if let event = PortEvent.parse(line) { events.append(event) }
        }
        // A prompt without a newline stays; anything else that long is not ours to keep.
        if buffer.count > 1 << 16 { buffer.removeAll() }
        return events
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
