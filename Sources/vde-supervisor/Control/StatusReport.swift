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
        /// Docker's name for the network: asked of dockerd by the CLI, absent when it did not say.
        var name: String? = nil
        /// External ports that switch deaths cut off (most recent last); absent when none.
        var lostPorts: [LostPorts]? = nil
        /// The network's default link (`-o link_*`, changed by `link NET set|clear`), which new
        /// endpoints get; absent when none.
        var link: LinkInfo? = nil
        /// Running captures (`vde-supervisor capture`), oldest first, as the worker reports them;
        /// absent when none (or the worker did not answer).
        var captures: [CaptureInfo]? = nil
        /// The network's uplink to other hosts (`-o uplink=URL`); absent when it has none.
        var uplink: UplinkInfo? = nil
        /// The MTU of the network's taps when not the kernel's 1500 (`-o com.docker.network.driver.mtu`,
        /// or the uplink's default); absent otherwise.
        var mtu: Int? = nil
    }

    /// A network's uplink: the URL as recorded, and what its worker reports.
    struct UplinkInfo: Codable, Sendable, Equatable {
        var url: String
        /// `running`, `restarting`, `stopped`, or `unknown` when the worker did not answer.
        var state: String
        var pid: Int32?
        var switchPort: Int?
        /// Seen from the switch port: `in` is what came from the other hosts.
        var counters: Counters?
        /// Restarts after it exited, since its worker started.
        var restarts: Int
        /// How it last ended, or why it cannot start.
        var detail: String?
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
        /// tap is; it looks again), `tapGone`, `linkDown` (the cable is pulled: `link ... down`),
        /// or `unknown` when the worker did not answer.
        var state: String
        var plugPID: Int32?
        var switchPort: Int?
        var counters: Counters?
        /// Why the endpoint is in its state, when the worker says (`unreachable`, `tapGone`).
        var detail: String? = nil
        /// Docker's name for the container: asked of dockerd by the CLI, absent when it did not say.
        var container: String? = nil
        /// The endpoint's link as the supervisor records it (impairment and cable); absent when
        /// unimpaired and up. `state` is `linkDown` while the cable is pulled.
        var link: LinkInfo? = nil
        /// The management socket of the endpoint's wirefilter (its plug while impaired), as the worker reports it.
        var linkManagementSocket: String? = nil
    }

    struct PortInfo: Codable, Sendable, Equatable {
        var port: Int
        /// The client's description on the switch (`vde_plug2tap: user=root pid=42`, `QEMU user=root pid=7`).
        var peer: String?
        var counters: Counters
        /// The description's first word: `vde_plug2tap`, `QEMU`.
        var program: String? = nil
        var pid: Int32? = nil
        /// Source MACs the switch learnt on the port; absent when the worker did not say.
        var macAddresses: [String]? = nil
    }

    /// The external ports on a switch when it died; their clients do not reconnect by themselves.
    struct LostPorts: Codable, Sendable, Equatable {
        var switchPID: Int32
        /// How the switch ended (`killed by signal 9`).
        var detail: String
        /// When the worker learnt of it, seconds since the epoch.
        var at: Int64
        var ports: [LostPort]
    }

    struct LostPort: Codable, Sendable, Equatable {
        var port: Int
        var peer: String?
        var program: String?
        var pid: Int32?
        var macAddresses: [String]
    }

    /// Seen from the switch port: `in` is what the endpoint sent into the switch.
    struct Counters: Codable, Sendable, Equatable {
        var inPackets: UInt64
        var inBytes: UInt64
        var outPackets: UInt64
        var outBytes: UInt64
    }
}
