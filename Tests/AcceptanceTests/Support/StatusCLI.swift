import Foundation
import Glibc
import Subprocess

extension Supervisor {
    /// The private control socket the fixture passes with `--control-socket`: `control.sock`
    /// next to the state dir, in the fixture's temp dir.
    var statusControlSocket: String {
        (stateDir as NSString).deletingLastPathComponent + "/control.sock"
    }
}

/// One run of the real `vde-supervisor status` binary.
struct StatusRun: Sendable, CustomStringConvertible {
    var argv: [String]
    var status: TerminationStatus
    var stdout: String
    var stderr: String
    /// How long the command took, spawn to exit.
    var elapsed: Duration

    /// The exit code, or nil when it died of a signal.
    var exitCode: Int32? {
        if case .exited(let code) = status { return Int32(code) }
        return nil
    }

    var description: String {
        "`\(argv.joined(separator: " "))` \(status) after \(elapsed)\n  stdout: \(stdout.prefix(6000))\n  stderr: \(stderr.prefix(2000))"
    }

    /// stdout as a JSON value; throws (with the output) when it is not JSON.
    func json() throws -> StatusJSONValue {
        do {
            return try JSONDecoder().decode(StatusJSONValue.self, from: Data(stdout.utf8))
        } catch {
            throw AcceptanceFailure("status --json printed something that is not JSON (\(error)): \(self)")
        }
    }

    /// stdout decoded as the documented report (after the schema check, for typed assertions).
    func report() throws -> StatusDoc {
        do {
            return try JSONDecoder().decode(StatusDoc.self, from: Data(stdout.utf8))
        } catch {
            throw AcceptanceFailure("status --json does not decode as the documented report (\(error)): \(self)")
        }
    }
}

enum StatusCLI {
    /// Runs `vde-supervisor status ARGS --control-socket SOCKET` and returns what it did.
    /// `timeout` is a hang guard only: a run that outlives it is killed and fails the test.
    static func run(_ arguments: [String], socket: String, timeout: Duration = .seconds(20)) async throws -> StatusRun {
        let argv = [try Binaries.supervisor, "status"] + arguments + ["--control-socket", socket]
        let clock = ContinuousClock()
        let start = clock.now
        let result = try await Command.run(argv, timeout: timeout)
        return StatusRun(
            argv: argv, status: result.status, stdout: result.stdout, stderr: result.stderr,
            elapsed: clock.now - start)
    }

    /// `status --json [ARGS]`, schema-checked: fails the test with every violation of
    /// docs/status.md. Returns the run and its typed report.
    static func checkedJSON(_ arguments: [String] = [], socket: String, timeout: Duration = .seconds(20)) async throws
        -> (run: StatusRun, report: StatusDoc)
    {
        let run = try await run(["--json"] + arguments, socket: socket, timeout: timeout)
        let value = try run.json()
        let violations = StatusSchema.report.violations(of: value)
        if !violations.isEmpty {
            throw AcceptanceFailure(
                "status --json does not follow the schema of docs/status.md:\n  "
                    + violations.joined(separator: "\n  ") + "\n\(run)")
        }
        return (run, try run.report())
    }
}

// MARK: - JSON as parsed

/// Any JSON value, decoded strictly: `true` is never a number and `1` never a bool, so types
/// can be checked against the schema.
enum StatusJSONValue: Decodable, Equatable, Sendable, CustomStringConvertible {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([StatusJSONValue])
    case object([String: StatusJSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let b = try? container.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? container.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? container.decode(Double.self) {
            self = .double(d)
        } else if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let a = try? container.decode([StatusJSONValue].self) {
            self = .array(a)
        } else if let o = try? container.decode([String: StatusJSONValue].self) {
            self = .object(o)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a JSON value")
        }
    }

    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "bool"
        case .int: "int"
        case .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .int(let i): "\(i)"
        case .double(let d): "\(d)"
        case .string(let s): "\"\(s)\""
        case .array(let a): "[\(a.count) items]"
        case .object(let o): "{\(o.keys.sorted().joined(separator: ","))}"
        }
    }
}

// MARK: - The schema of docs/status.md

/// The JSON schema of docs/status.md (schemaVersion 1), as data, with a walker that lists every
/// violation: a missing required field, a wrong type, a value outside an enum, `null` for an
/// optional field (they are omitted when unknown), or a field the document does not describe.
indirect enum StatusSchema: Sendable {
    case string
    case int
    case bool
    /// A string from a fixed set.
    case oneOf([String])
    /// An int with exactly this value.
    case exactly(Int64)
    case array(StatusSchema)
    case object([String: Field])
    /// An object whose keys are data (any name), each value of this schema.
    case map(StatusSchema)

    struct Field: Sendable {
        var schema: StatusSchema
        var optional: Bool
    }

    static func required(_ s: StatusSchema) -> Field { Field(schema: s, optional: false) }
    static func optional(_ s: StatusSchema) -> Field { Field(schema: s, optional: true) }

    static let counters: StatusSchema = .object([
        "inPackets": required(.int), "inBytes": required(.int),
        "outPackets": required(.int), "outBytes": required(.int),
    ])

    /// An endpoint's link (issue 13): absent when unimpaired and up; a network's default link
    /// has the same shape.
    static let link: StatusSchema = .object([
        "down": required(.bool), "summary": required(.string), "settings": required(.map(.string)),
        "impairment": required(
            .object([
                "delayMicroseconds": optional(.int), "jitterMicroseconds": optional(.int),
                "lossMillipercent": optional(.int), "lossBurst": optional(.int),
                "duplicateMillipercent": optional(.int), "rateBitsPerSecond": optional(.int),
            ])),
    ])

    static let report: StatusSchema = .object([
        "schemaVersion": required(.exactly(1)),
        "healthy": required(.bool),
        "supervisor": required(
            .object([
                "pid": required(.int), "pluginSocket": required(.string), "stateDir": required(.string),
                "uptimeSeconds": required(.int), "statusLine": required(.string),
            ])),
        "networks": required(
            .array(
                .object([
                    "id": required(.string), "shortID": required(.string),
                    "subnets": required(.array(.string)), "gateways": required(.array(.string)),
                    "healthy": required(.bool),
                    "switch": required(
                        .object([
                            "ctlDir": required(.string), "managementSocket": optional(.string),
                            "ownership": required(.oneOf(["own", "external"])), "pid": optional(.int),
                            "numPorts": required(.int),
                        ])),
                    "worker": required(
                        .object([
                            "pid": optional(.int),
                            "state": required(
                                .oneOf(["starting", "running", "restarting", "unresponsive", "stopping", "stopped"])),
                            "uptimeSeconds": optional(.int), "restarts": required(.int), "lastError": optional(.string),
                        ])),
                    "endpoints": required(
                        .array(
                            .object([
                                "id": required(.string), "shortID": required(.string), "tap": required(.string),
                                "macAddress": required(.string), "ipv4": optional(.string), "ipv6": optional(.string),
                                "sandbox": optional(.string),
                                "state": required(
                                    .oneOf([
                                        "plugged", "unplugged", "restarting", "unreachable", "tapGone", "linkDown",
                                        "unknown",
                                    ])),
                                "plugPID": optional(.int), "switchPort": optional(.int), "detail": optional(.string),
                                "counters": optional(counters), "container": optional(.string),
                                "link": optional(link), "linkManagementSocket": optional(.string),
                            ]))),
                    "otherPorts": required(
                        .array(
                            .object([
                                "port": required(.int), "peer": optional(.string), "counters": required(counters),
                                "program": optional(.string), "pid": optional(.int),
                                "macAddresses": optional(.array(.string)),
                            ]))),
                    "name": optional(.string),
                    "link": optional(link),
                    "lostPorts": optional(
                        .array(
                            .object([
                                "switchPID": required(.int), "detail": required(.string), "at": required(.int),
                                "ports": required(
                                    .array(
                                        .object([
                                            "port": required(.int), "peer": optional(.string),
                                            "program": optional(.string), "pid": optional(.int),
                                            "macAddresses": required(.array(.string)),
                                        ]))),
                            ]))),
                    "captures": optional(.array(capture)),
                    "uplink": optional(uplink),
                    "mtu": optional(.int),
                ]))),
    ])

    /// A network's uplink to other hosts (issue 16): absent when it has none.
    static let uplink: StatusSchema = .object([
        "url": required(.string), "state": required(.oneOf(["running", "restarting", "stopped", "unknown"])),
        "pid": optional(.int), "switchPort": optional(.int), "counters": optional(counters),
        "restarts": required(.int), "detail": optional(.string),
    ])

    /// A running capture of a network (issue 14): absent when none runs.
    static let capture: StatusSchema = .object([
        "id": required(.string), "target": required(.oneOf(["segment", "endpoint"])),
        "endpoint": optional(.string), "endpointShortID": optional(.string), "container": optional(.string),
        "filter": optional(.string), "startedAt": required(.int), "clientPID": optional(.int),
        "clientUID": optional(.int), "frames": required(.int), "dropped": required(.int),
    ])

    /// Every way `value` (at `path`) departs from this schema.
    func violations(of value: StatusJSONValue, at path: String = "$") -> [String] {
        switch (self, value) {
        case (.string, .string), (.int, .int), (.bool, .bool):
            return []
        case (.oneOf(let allowed), .string(let s)):
            return allowed.contains(s) ? [] : ["\(path): \"\(s)\" is not one of \(allowed)"]
        case (.exactly(let expected), .int(let i)):
            return i == expected ? [] : ["\(path): \(i), expected \(expected)"]
        case (.array(let element), .array(let items)):
            return items.enumerated().flatMap { element.violations(of: $1, at: "\(path)[\($0)]") }
        case (.map(let element), .object(let members)):
            return members.sorted { $0.key < $1.key }.flatMap { element.violations(of: $1, at: "\(path).\($0)") }
        case (.object(let fields), .object(let members)):
            var found: [String] = []
            for (name, field) in fields.sorted(by: { $0.key < $1.key }) {
                switch members[name] {
                case nil where !field.optional:
                    found.append("\(path).\(name): required field missing")
                case nil:
                    break
                case .null?:
                    found.append(
                        "\(path).\(name): null (\(field.optional ? "optional fields are omitted when unknown" : "required"))"
                    )
                case let member?:
                    found += field.schema.violations(of: member, at: "\(path).\(name)")
                }
            }
            for name in members.keys.sorted() where fields[name] == nil {
                found.append("\(path).\(name): field not documented in docs/status.md")
            }
            return found
        default:
            return ["\(path): \(value.kind) \(value), expected \(expectedKind)"]
        }
    }

    private var expectedKind: String {
        switch self {
        case .string: "string"
        case .int, .exactly: "int"
        case .bool: "bool"
        case .oneOf(let allowed): "one of \(allowed)"
        case .array: "array"
        case .object, .map: "object"
        }
    }
}

// MARK: - The report, typed (the test's own reading of docs/status.md)

struct StatusDoc: Decodable, Sendable {
    var schemaVersion: Int
    var healthy: Bool
    var supervisor: Supervisor
    var networks: [Network]

    struct Supervisor: Decodable, Sendable {
        var pid: Int32
        var pluginSocket: String
        var stateDir: String
        var uptimeSeconds: Int64
        var statusLine: String
    }

    struct Network: Decodable, Sendable {
        var id: String
        var shortID: String
        var subnets: [String]
        var gateways: [String]
        var healthy: Bool
        var `switch`: Switch
        var worker: Worker
        var endpoints: [Endpoint]
        var otherPorts: [OtherPort]
        var name: String?
        var lostPorts: [LostPorts]?
        var uplink: Uplink?
        var mtu: Int?

        func endpoint(_ id: String) -> Endpoint? { endpoints.first { $0.id == id } }
    }

    struct Uplink: Decodable, Sendable {
        var url: String
        var state: String
        var pid: Int32?
        var switchPort: Int?
        var counters: Counters?
        var restarts: Int
        var detail: String?
    }

    struct LostPorts: Decodable, Sendable {
        var switchPID: Int32
        var detail: String
        var at: Int64
        var ports: [LostPort]
    }

    struct LostPort: Decodable, Sendable {
        var port: Int
        var peer: String?
        var program: String?
        var pid: Int32?
        var macAddresses: [String]
    }

    struct Switch: Decodable, Sendable {
        var ctlDir: String
        var managementSocket: String?
        var ownership: String
        var pid: Int32?
        var numPorts: Int
    }

    struct Worker: Decodable, Sendable {
        var pid: Int32?
        var state: String
        var uptimeSeconds: Int64?
        var restarts: Int
        var lastError: String?
    }

    struct Endpoint: Decodable, Sendable {
        var id: String
        var shortID: String
        var tap: String
        var macAddress: String
        var ipv4: String?
        var ipv6: String?
        var sandbox: String?
        var state: String
        var plugPID: Int32?
        var switchPort: Int?
        var counters: Counters?
        var container: String?
        var link: Link?
        var linkManagementSocket: String?
    }

    struct Link: Decodable, Sendable {
        var down: Bool
        var summary: String
        var settings: [String: String]
    }

    struct OtherPort: Decodable, Sendable {
        var port: Int
        var peer: String?
        var counters: Counters
        var program: String?
        var pid: Int32?
        var macAddresses: [String]?
    }

    struct Counters: Decodable, Sendable, CustomStringConvertible {
        var inPackets: UInt64
        var inBytes: UInt64
        var outPackets: UInt64
        var outBytes: UInt64
        var description: String { "in \(inPackets) pkts/\(inBytes) B, out \(outPackets) pkts/\(outBytes) B" }
    }

    func network(_ id: String) -> Network? { networks.first { $0.id == id } }
    func network(named name: String) -> Network? { networks.first { $0.name == name } }
}

// MARK: - Host facts

enum StatusHost {
    /// The argv of a live process, or nil.
    static func argv(of pid: Int32) -> [String]? {
        HostInspector.processes().first { $0.pid == pid }?.argv
    }

    /// True when `argv` holds `flag` directly followed by `value`.
    static func has(_ argv: [String], _ flag: String, _ value: String) -> Bool {
        zip(argv, argv.dropFirst()).contains { $0 == flag && $1 == value }
    }

    static func program(_ argv: [String]) -> String {
        argv.first.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? ""
    }

    /// Leaves a unix socket file at `path` with nothing behind it (bound, never listened on,
    /// closed): connecting to it is refused.
    static func makeStaleSocket(_ path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw AcceptanceFailure("socket(): errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw AcceptanceFailure("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw AcceptanceFailure("bind(\(path)): errno \(errno)") }
    }

    /// Kills (by pid) VDE processes whose argv mentions `needle`, SIGTERM then SIGKILL; returns them.
    static func killVDEProcesses(mentioning needle: String) async -> [HostInspector.ProcessInfo] {
        let found = HostInspector.vdeProcesses(mentioning: [needle])
        for p in found { kill(p.pid, SIGTERM) }
        _ = try? await Poll.until("VDE processes mentioning \(needle) to exit", deadline: .seconds(5)) {
            HostInspector.vdeProcesses(mentioning: [needle]).isEmpty
        }
        for p in HostInspector.vdeProcesses(mentioning: [needle]) { kill(p.pid, SIGKILL) }
        return found
    }
}

extension Supervisor {
    /// The supervisor's log without the debug lines of each control-socket call (the status
    /// tests make many), its last `lines` lines: what to read when a status test fails.
    func logWithoutStatusCalls(lines: Int = 80) -> String {
        let all = (TempDir.readText(logPath) ?? "").split(separator: "\n", omittingEmptySubsequences: false)
        let kept = all.filter { !$0.contains("the control socket call") }
        return kept.suffix(lines).joined(separator: "\n")
    }
}
