/// What `vde-supervisor status --json` prints and the control socket serves at `GET /v1/status`.
/// Stable: fields are only ever added (documented in docs/status.md); `schemaVersion` changes
/// if one is removed or changes meaning.
struct StatusReport: Codable, Sendable, Equatable {
    static let currentSchemaVersion = 1

    var schemaVersion = StatusReport.currentSchemaVersion
    var supervisor: SupervisorInfo
    var networks: [NetworkInfo]
    /// True when every network's worker runs and answers and no endpoint is degraded.
    var healthy: Bool

    struct SupervisorInfo: Codable, Sendable, Equatable {
        var pid: Int32
        var pluginSocket: String
        var stateDir: String
        var uptimeSeconds: Int64
        var statusLine: String
    }

    struct NetworkInfo: Codable, Sendable, Equatable {
        var id: String
        var shortID: String
        var subnets: [String]
        var gateways: [String]
        var `switch`: SwitchInfo
        var worker: WorkerInfo
        var healthy: Bool
        var endpoints: [EndpointInfo]
        /// Switch ports used by others: VMs, external plugs.
        var otherPorts: [PortInfo]
    }

    struct SwitchInfo: Codable, Sendable, Equatable {
        var ctlDir: String
        var managementSocket: String?
        /// `own` (this plugin started it and removes it) or `external`.
        var ownership: String
        var pid: Int32?
        var numPorts: Int
    }

    struct WorkerInfo: Codable, Sendable, Equatable {
        var pid: Int32?
        /// `running`, `starting`, `restarting`, `unresponsive`, `stopping`, `stopped`.
        var state: String
        var uptimeSeconds: Int64?
        var restarts: Int
        var lastError: String?
    }

    struct EndpointInfo: Codable, Sendable, Equatable {
        var id: String
        var shortID: String
        var tap: String
        var macAddress: String
        var ipv4: String?
        var ipv6: String?
        /// The container's network namespace, once joined.
        var sandbox: String?
        /// `plugged`, `unplugged`, `restarting`, `unreachable` (the worker could not look where the
        /// tap is; it looks again), `tapGone`, or `unknown` when the worker did not answer.
        var state: String
        var plugPID: Int32?
        var switchPort: Int?
        var counters: Counters?
        /// Why the endpoint is in its state, when the worker says (`unreachable`, `tapGone`).
        var detail: String? = nil
    }

    struct PortInfo: Codable, Sendable, Equatable {
        var port: Int
        var peer: String?
        var counters: Counters
    }

    /// Seen from the switch port: `in` is what the endpoint sent into the switch.
    struct Counters: Codable, Sendable, Equatable {
        var inPackets: UInt64
        var inBytes: UInt64
        var outPackets: UInt64
        var outBytes: UInt64
    }
}
