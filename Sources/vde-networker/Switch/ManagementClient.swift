import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// A failed exchange with a management socket: a switch's, or a wirefilter's (``ManagementConsole``).
struct ManagementError: ReportableError, CustomStringConvertible {
    var socketPath: String
    var reason: String
    /// Whose socket it is.
    var console: ManagementConsole = .switch

    var description: String { "the management socket \(socketPath) of the \(console.owner) \(reason)" }
    var vdeError: VDEError {
        switch console {
        case .switch:
            .system(description + "; check that the switch runs and that management_socket names its -M socket")
        case .wirefilter:
            .system(description + "; the endpoint's wirefilter may have exited (vde-supervisor status shows it)")
        }
    }
}

/// The two VDE consoles the worker talks to. They speak the same line protocol (a banner,
/// `NNNN text` status lines, data between `0000 DATA END WITH '.'` and `.`) and differ in
/// their prompt only, measured: vde_switch 2.3.2 prompts `vde$ `, wirefilter 2.3.2 `VDEwf$ `
/// (neither ends the prompt with a newline).
enum ManagementConsole: Sendable, Equatable {
    case `switch`
    case wirefilter

    var prompt: String {
        switch self {
        case .switch: "vde$ "
        case .wirefilter: "VDEwf$ "
        }
    }

    var owner: String {
        switch self {
        case .switch: "switch"
        case .wirefilter: "wirefilter"
        }
    }
}

/// One reply of the management console: `0000 DATA END WITH '.'`, data lines, `.`, then a
/// status line such as `1000 Success` or `1022 Invalid argument`.
struct ManagementReply: Sendable, Equatable {
    var code: Int
    var message: String
    var data: [String]

    var succeeded: Bool { code == 1000 }

    /// The switch's prompt.
    static let prompt = ManagementConsole.switch.prompt

    /// Parses what was read so far; nil until a complete status line has arrived. The banner the
    /// console sends on connect and its prompts (`prompt`) are skipped.
    static func parse(_ text: String, prompt: String = ManagementReply.prompt) -> ManagementReply? {
        // Only newline-terminated lines are complete.
        guard let lastNewline = text.lastIndex(of: "\n") else { return nil }
        var inData = false
        var data: [String] = []
        for rawLine in text[..<lastNewline].split(separator: "\n", omittingEmptySubsequences: false) {
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            while line.hasPrefix(prompt) { line = line.dropFirst(prompt.count) }
            if inData {
                if line == "." { inData = false } else { data.append(String(line)) }
                continue
            }
            guard let (code, message) = statusLine(line) else { continue }
            if code == 0 {
                inData = true
                data = []
            } else {
                return ManagementReply(code: code, message: message, data: data)
            }
        }
        return nil
    }

    /// `NNNN text` with four digits.
    private static func statusLine(_ line: Substring) -> (Int, String)? {
        let digits = line.prefix(4)
        guard digits.count == 4, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let code = Int(digits)
        else { return nil }
        let rest = line.dropFirst(4)
        guard rest.isEmpty || rest.hasPrefix(" ") else { return nil }
        return (code, String(rest.drop(while: { $0 == " " })))
    }
}

/// One port as `port/allprint` lists it.
struct PortEntry: Sendable, Equatable {
    /// One client connection on a port (a port can have several).
    struct Endpoint: Sendable, Equatable {
        /// The switch's number for the connection (`port/epclose PORT ID`).
        var id: Int
        var program: String?
        var pid: Int32?
    }

    var counters: PortCounters
    /// `ACTIVE`: in use. A port whose client left stays listed as `INACTIVE`, and is free.
    var active: Bool
    var endpoints: [Endpoint]
}

/// Reads per-port counters out of the data lines of `port/allprint` / `port/print`.
enum PortReport {
    /// Lines look like this (one block per port; a port can have several endpoints):
    /// ```
    /// Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable
    ///  Current User: root Access Control: (User: NONE - Group: NONE)
    ///  IN:  pkts         10          bytes                  852
    ///  OUT: pkts         10          bytes                  852
    ///   -- endpoint ID 0003 module unix prog   : vde_plug2tap: user=root pid=12068
    /// ```
    /// Only ports in use (`ACTIVE`) are returned; `peer` is the first endpoint's program.
    static func parse(_ lines: [String]) -> [PortCounters] {
        parseAll(lines).filter(\.active).map(\.counters)
    }

    /// Every listed port, active or not, with its endpoints.
    static func parseAll(_ lines: [String]) -> [PortEntry] {
        var ports: [PortEntry] = []
        for rawLine in lines {
            let line = rawLine.drop(while: { $0 == " " || $0 == "\t" })
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = words.first else { continue }
            if first == "Port", words.count >= 2, let number = Int(words[1]) {
                ports.append(
                    PortEntry(counters: PortCounters(port: number), active: words.contains("ACTIVE"), endpoints: []))
                continue
            }
            guard !ports.isEmpty else { continue }
            let last = ports.count - 1
            switch first {
            case "IN:", "OUT:":
                let (packets, bytes) = counters(words)
                if first == "IN:" {
                    ports[last].counters.inPackets = packets
                    ports[last].counters.inBytes = bytes
                } else {
                    ports[last].counters.outPackets = packets
                    ports[last].counters.outBytes = bytes
                }
            case "--" where words.count >= 4 && words[1] == "endpoint" && words[2] == "ID":
                guard let id = Int(words[3]) else { continue }
                let program = endpointProgram(line)
                let endpoint = PortEntry.Endpoint(id: id, program: program, pid: program.flatMap(processID(in:)))
                ports[last].endpoints.append(endpoint)
                if ports[last].counters.peer == nil, let program {
                    ports[last].counters.peer = program
                    ports[last].counters.peerPID = endpoint.pid
                }
            default:
                continue
            }
        }
        return ports
    }

    /// `IN:  pkts 10 bytes 852` -> (10, 852).
    private static func counters(_ words: [Substring]) -> (UInt64, UInt64) {
        var packets: UInt64 = 0
        var bytes: UInt64 = 0
        var index = 1
        while index + 1 < words.count {
            if words[index] == "pkts" { packets = UInt64(words[index + 1]) ?? 0 }
            if words[index] == "bytes" { bytes = UInt64(words[index + 1]) ?? 0 }
            index += 1
        }
        return (packets, bytes)
    }

    /// The text after `prog ... :` of an endpoint line: `vde_plug2tap: user=root pid=12068`, `QEMU user=root pid=77`.
    private static func endpointProgram(_ line: Substring) -> String? {
        guard let prog = line.firstRange(of: " prog") else { return nil }
        let afterProg = line[prog.upperBound...]
        guard let colon = afterProg.firstIndex(of: ":") else { return nil }
        let program = afterProg[afterProg.index(after: colon)...].trimmingSpaces()
        return program.isEmpty ? nil : String(program)
    }

    /// The number of the last `pid=N` word.
    static func processID(in peer: String) -> Int32? {
        for word in peer.split(separator: " ").reversed() where word.hasPrefix("pid=") {
            return Int32(word.dropFirst(4))
        }
        return nil
    }

    /// `Numports=33` of `port/showinfo`: the switch's `-n`, port 0 included.
    static func numberOfPorts(showInfo lines: [String]) -> Int? {
        for line in lines {
            let trimmed = line.trimmingSpaces()
            if trimmed.hasPrefix("Numports="), let n = Int(trimmed.dropFirst("Numports=".count)) { return n }
        }
        return nil
    }
}

/// One entry of the switch's MAC table.
struct MACTableEntry: Sendable, Equatable {
    /// Lower case, as the switch prints it.
    var macAddress: String
    var port: Int
}

/// Reads the data lines of `hash/print`.
enum MACTable {
    /// Measured on vde_switch 2.3.2 (one line per learnt source MAC; the hash bucket first):
    /// ```
    /// Hash: 0070 Addr: 02:11:22:33:44:55 VLAN 0000 to port: 001  age 0 secs
    /// ```
    /// Lines that do not read so are skipped.
    static func parse(_ lines: [String]) -> [MACTableEntry] {
        lines.compactMap { line in
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let addr = words.firstIndex(of: "Addr:"), addr + 1 < words.count,
                let to = words.firstIndex(of: "port:"), to + 1 < words.count, let port = Int(words[to + 1]),
                let mac = macAddress(words[addr + 1])
            else { return nil }
            return MACTableEntry(macAddress: mac, port: port)
        }
    }

    /// Six colon-separated hex octets, lower-cased; nil for anything else.
    static func macAddress(_ word: Substring) -> String? {
        let octets = word.split(separator: ":", omittingEmptySubsequences: false)
        guard octets.count == 6, octets.allSatisfy({ $0.count == 2 && $0.allSatisfy(\.isHexDigit) }) else {
            return nil
        }
        return word.lowercased()
    }
}

extension PortEntry {
    /// The program of an endpoint description: its first word without a trailing colon
    /// (`vde_plug2tap: user=root pid=42` -> `vde_plug2tap`, `QEMU user=root pid=7` -> `QEMU`).
    static func programName(of description: String) -> String? {
        guard let first = description.split(separator: " ").first else { return nil }
        let name = first.hasSuffix(":") ? first.dropLast() : first
        return name.isEmpty ? nil : String(name)
    }
}

extension StringProtocol {
    func trimmingSpaces() -> SubSequence {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else {
            return self[endIndex...]
        }
        return self[start...end]
    }
}

/// Talks to a switch's management socket (`vde_switch -M`), or a wirefilter's (`wirefilter -M`,
/// `console: .wirefilter`), with non-blocking I/O and a deadline, so that a hung switch costs at
/// most `timeout`: on the worker's kept connection to its switch (``session``, see
/// ``ManagementSession`` for why), or on a connection of its own per exchange (`session` nil).
struct ManagementClient: Sendable {
    var socketPath: String
    var timeout: Duration = .seconds(1)
    var console: ManagementConsole = .switch
    /// The kept connection to use; nil: one connection per exchange.
    var session: ManagementSession? = nil

    func run(_ command: String) async throws(ManagementError) -> ManagementReply {
        guard let reply = try await run([command]).first else {
            throw ManagementError(socketPath: socketPath, reason: "gave no reply", console: console)
        }
        return reply
    }

    /// Runs `commands` one after the other on one connection (each waits for the reply to the
    /// one before) and returns their replies, all within `timeout`.
    func run(_ commands: [String]) async throws(ManagementError) -> [ManagementReply] {
        let path = socketPath
        let limit = timeout
        let console = console
        let session = session
        let result = await Blocking.run {
            if let session { return session.exchange(commands: commands, timeout: limit, console: console) }
            return ManagementClient.exchange(path: path, commands: commands, timeout: limit, console: console)
        }
        return try result.get()
    }

    /// Counters of every port in use (`port/allprint`, `ACTIVE` ports only).
    func ports() async throws(ManagementError) -> [PortCounters] {
        let reply = try await run("port/allprint")
        guard reply.succeeded else {
            throw ManagementError(
                socketPath: socketPath, reason: "answered port/allprint with \(reply.code) \(reply.message)")
        }
        return PortReport.parse(reply.data)
    }

    /// Every listed port with its endpoints (`port/allprint`), free (`INACTIVE`) ones included.
    func portEntries() async throws(ManagementError) -> [PortEntry] {
        let reply = try await run("port/allprint")
        guard reply.succeeded else {
            throw ManagementError(
                socketPath: socketPath, reason: "answered port/allprint with \(reply.code) \(reply.message)")
        }
        return PortReport.parseAll(reply.data)
    }

    /// The switch's MAC table (`hash/print`): which source MAC was last seen on which port.
    func macTable() async throws(ManagementError) -> [MACTableEntry] {
        let reply = try await run("hash/print")
        guard reply.succeeded else {
            throw ManagementError(
                socketPath: socketPath, reason: "answered hash/print with \(reply.code) \(reply.message)")
        }
        return MACTable.parse(reply.data)
    }

    /// Drops one client connection of a port (`port/epclose PORT ID`).
    func closeEndpoint(port: Int, id: Int) async throws(ManagementError) {
        let reply = try await run("port/epclose \(port) \(id)")
        guard reply.succeeded else {
            throw ManagementError(
                socketPath: socketPath,
                reason: "answered port/epclose \(port) \(id) with \(reply.code) \(reply.message)")
        }
    }

    /// Ports a client can get: the switch's `-n` less port 0.
    func usablePorts() async throws(ManagementError) -> Int? {
        let reply = try await run("port/showinfo")
        return PortReport.numberOfPorts(showInfo: reply.data).map { $0 - 1 }
    }

    /// Connects, sends each command and reads until its complete reply, then closes; all within
    /// `timeout`.
    static func exchange(path: String, commands: [String], timeout: Duration, console: ManagementConsole = .switch)
        -> Result<[ManagementReply], ManagementError>
    {
        let deadline = ContinuousClock.now + timeout
        let socket: UnixSocket
        switch connect(path: path, deadline: deadline, timeout: timeout, console: console) {
        case .success(let connected): socket = connected
        case .failure(let error): return .failure(error)
        }
        defer { socket.close() }
        return converse(on: socket, commands: commands, deadline: deadline, timeout: timeout, console: console)
            .mapError(\.error)
    }

    /// A connection to the console at `path`, made before `deadline`.
    static func connect(path: String, deadline: ContinuousClock.Instant, timeout: Duration, console: ManagementConsole)
        -> Result<UnixSocket, ManagementError>
    {
        do {
            return .success(try UnixSocket.connect(to: path, deadline: deadline))
        } catch {
            let reason: String
            switch error.errno {
            case ENAMETOOLONG: reason = "path is too long for a unix socket"
            case ETIMEDOUT: reason = "does not accept connections (no reply within \(timeout.milliseconds) ms)"
            default:
                reason =
                    error.call == "socket"
                    ? "cannot be used: socket: \(error.text)" : "does not answer (connect: \(error.text))"
            }
            return .failure(ManagementError(socketPath: path, reason: reason, console: console))
        }
    }

    /// Why a conversation failed, and whether the connection was found closed before any of
    /// the reply came (a kept connection whose switch closed it or went: worth one more try on a
    /// new connection).
    struct ConversationFailure: Error {
        var error: ManagementError
        var connectionLost: Bool
    }

    /// Sends each command on `socket` and reads until its complete reply, then the prompt that
    /// follows, all before `deadline`. The connection stays open.
    static func converse(
        on socket: UnixSocket, commands: [String], deadline: ContinuousClock.Instant, timeout: Duration,
        console: ManagementConsole
    ) -> Result<[ManagementReply], ConversationFailure> {
        let path = socket.path
        func failure(_ reason: String, lost: Bool = false) -> Result<[ManagementReply], ConversationFailure> {
            .failure(
                ConversationFailure(
                    error: ManagementError(socketPath: path, reason: reason, console: console), connectionLost: lost))
        }
        var replies: [ManagementReply] = []
        var received: [UInt8] = []
        for command in commands {
            do {
                try socket.send(Array((command + "\n").utf8), deadline: deadline)
            } catch {
                let lost = error.errno == EPIPE || error.errno == ECONNRESET
                return failure("did not take the command '\(command)' (\(error.text))", lost: lost)
            }
            do {
                // Each reply is read from after the previous one: its status line ends it.
                received = try socket.receiveMessage(deadline: deadline, limit: 4 << 20) {
                    ManagementReply.parse(String(decoding: $0, as: UTF8.self), prompt: console.prompt) != nil
                }
            } catch {
                switch error.errno {
                case ETIMEDOUT: return failure("did not reply to '\(command)' within \(timeout.milliseconds) ms")
                case EMSGSIZE: return failure("sent more than 4 MiB without finishing its reply")
                case ECONNRESET: return failure("failed: recv: \(error.text)", lost: replies.isEmpty)
                default: return failure("failed: recv: \(error.text)")
                }
            }
            guard let reply = ManagementReply.parse(String(decoding: received, as: UTF8.self), prompt: console.prompt)
            else {
                return failure(
                    "closed the connection before replying to '\(command)'", lost: replies.isEmpty && received.isEmpty)
            }
            replies.append(reply)
            if command != commands.last {
                // The prompt after the reply, so that the next reply is read from a clean start.
                guard drainPrompt(socket, received: received, prompt: console.prompt) else {
                    return failure("did not prompt again after '\(command)'")
                }
            }
        }
        drainPrompt(socket, received: received, prompt: console.prompt)
        return .success(replies)
    }

    /// Reads the prompt that follows a reply (briefly), so that a kept connection's next
    /// exchange starts clean and closing the socket is an orderly end: closing with unread data
    /// resets the connection and the switch logs "Reading from mgmt Connection reset by peer".
    /// True once the prompt was seen.
    @discardableResult
    private static func drainPrompt(_ socket: UnixSocket, received: [UInt8], prompt: String) -> Bool {
        var seen = String(decoding: received.suffix(64), as: UTF8.self)
        let deadline = ContinuousClock.now + .milliseconds(50)
        while !seen.hasSuffix(prompt) {
            guard let chunk = try? socket.receive(maximum: 1024, deadline: deadline), !chunk.isEmpty else {
                return false
            }
            seen = String((seen + String(decoding: chunk, as: UTF8.self)).suffix(64))
        }
        return true
    }
}
