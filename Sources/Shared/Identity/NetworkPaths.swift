/// Every path of one network, computed once by the supervisor at CreateNetwork
/// (``init(runDir:network:options:)``), recorded in its state and sent to the worker in the
/// switch spec. Nothing else derives a path of a network: the worker and the tests read them here.
///
/// - `networkDir`: the network's own run dir, `<run dir>/<short network ID>`: what the plugin
///   keeps of its own (``plugsDir``, ``deletingDir``, ``creatingDir``, ``switchPIDFile``,
///   ``workerSocket``), and,
///   without `socket_dir`, the switch's sockets.
/// - `ctlDir`: the switch's ctl directory (`vde_switch -s`, `vde_plug2tap -s`, QEMU's `sock=`).
/// - `managementSocket`: the switch's management socket (`vde_switch -M`), when known: the
///   user's `management_socket`, else `<networkDir>/mgmt` for a switch the plugin may start.
///
/// Decoding checks every path as ``NetworkOptions/checkedPath(_:option:)`` does (absolute,
/// normalised, short enough for unix sockets), so no bad path reaches an argv or a file call.
public struct NetworkPaths: Codable, Sendable, Equatable {
    public let networkDir: String
    public let ctlDir: String
    public let managementSocket: String?

    /// The names below `networkDir`, in one place.
    enum Name {
        static let ctl = "ctl"
        static let management = "mgmt"
        static let plugs = "plugs"
        static let deleting = "deleting"
        static let creating = "creating"
        static let switchPID = "switch.pid"
        static let uplinkPID = "uplink.pid"
        static let workerSocket = "worker.sock"
        static let links = "links"
        static let captures = "captures"
        static let captureSink = "sink"
    }

    /// Checks the three paths: each as a `-o` path option, the ctl dir and the management
    /// socket different.
    public init(networkDir: String, ctlDir: String, managementSocket: String?) throws(VDEError) {
        self.networkDir = try NetworkOptions.checkedPath(networkDir, option: "networkDir")
        self.ctlDir = try NetworkOptions.checkedPath(ctlDir, option: NetworkOptions.socketDirKey)
        if let managementSocket {
            _ = try NetworkOptions.checkedPath(managementSocket, option: NetworkOptions.managementSocketKey)
            guard managementSocket != ctlDir else {
                throw .invalid("the ctl dir and the management socket must be different paths")
            }
        }
        self.managementSocket = managementSocket
    }

    /// The paths of a new network: its own run dir below `runDir`; its switch there
    /// (`ctl`, `mgmt`) unless `socket_dir` names one (then `management_socket` or none).
    public init(runDir: String, network: NetworkID, options: NetworkOptions) throws(VDEError) {
        let networkDir = Self.networkDir(runDir: runDir, network: network)
        // The longest name the switch puts below its ctl dir must fit a unix socket path.
        guard networkDir.utf8.count + 1 + Name.ctl.utf8.count + 1 <= NetworkOptions.maxPathLength else {
            throw .invalid("run dir \(UntrustedText(runDir)) is too long for unix socket paths below it")
        }
        if let socketDir = options.socketDir {
            // A switch the plugin may start gets a management socket of the plugin's own, so
            // that status can show its ports (VMs included) and counters.
            let management =
                options.managementSocket ?? (options.createSockets ? networkDir + "/" + Name.management : nil)
            try self.init(networkDir: networkDir, ctlDir: socketDir, managementSocket: management)
        } else {
            try self.init(
                networkDir: networkDir, ctlDir: networkDir + "/" + Name.ctl,
                managementSocket: options.managementSocket ?? networkDir + "/" + Name.management)
        }
    }

    /// `<run dir>/<short network ID>`. Only for the two places that make a ``NetworkPaths``:
    /// a new network, and a state record written before `networkDir` was recorded.
    public static func networkDir(runDir: String, network: NetworkID) -> String {
        (runDir.hasSuffix("/") ? String(runDir.dropLast()) : runDir) + "/" + network.short
    }

    /// The management socket to talk to: one the user named always; the plugin's own default
    /// (below ``networkDir``) only when the plugin started the switch, since a switch someone
    /// else started at a `create_sockets` dir never listens there.
    public func managementSocket(switchStartedByPlugin: Bool) -> String? {
        guard let managementSocket else { return nil }
        return switchStartedByPlugin || !managementSocket.hasPrefix(networkDir + "/") ? managementSocket : nil
    }

    /// Pid files of the running plugs, `<endpoint ID>.pid`.
    public var plugsDir: String { networkDir + "/" + Name.plugs }
    /// Markers of taps whose deletion has not finished.
    public var deletingDir: String { networkDir + "/" + Name.deleting }
    /// Markers of taps made for an endpoint the supervisor has not recorded yet.
    public var creatingDir: String { networkDir + "/" + Name.creating }
    /// The identity of the switch the plugin started.
    public var switchPIDFile: String { networkDir + "/" + Name.switchPID }
    /// The identity of the network's uplink (`vde_plug`), which outlives its worker.
    public var uplinkPIDFile: String { networkDir + "/" + Name.uplinkPID }
    /// Where the network's worker listens for a supervisor that adopts it (docs/recovery.md).
    public var workerSocket: String { networkDir + "/" + Name.workerSocket }

    /// Refuses link shaping on a switch whose ctl dir holds a `:`. A wirefilter takes its two
    /// plugs as one argument, `-v CTLDIR:tap://IF`, split at the first `:` (measured with
    /// wirefilter 2.3.2), so such a ctl dir would be cut in two: the wirefilter would fail to
    /// start, or worse, reach another path. Only a `socket_dir` can hold one.
    public func checkLinksCanBeShaped() throws(VDEError) {
        guard !ctlDir.contains(":") else {
            throw .invalid(
                "links on this network cannot be shaped: its socket_dir '\(UntrustedText(ctlDir))' contains ':', "
                    + "which wirefilter cannot take (it reads its plugs as one CTLDIR:tap://IF argument); "
                    + "use a socket_dir without ':'")
        }
    }

    /// The wirefilters of impaired endpoints keep their files here (see ``linkManagementSocket(tap:)``).
    public var linksDir: String { networkDir + "/" + Name.links }
    /// The management socket of the wirefilter that plugs the tap `tap` (`wirefilter -M`):
    /// named after the tap, whose name is short, since an endpoint ID would not fit a unix socket path.
    public func linkManagementSocket(tap: TapName) -> String { linksDir + "/" + tap.rawValue + ".mgmt" }
    /// The pid file the wirefilter of `tap` writes itself (`wirefilter --daemon --pidfile`);
    /// the worker copies it into the plug's pid file below ``plugsDir`` as pid + start time.
    public func linkPIDFile(tap: TapName) -> String { linksDir + "/" + tap.rawValue + ".pid" }

    /// Capture sockets live here, made only while a capture runs (docs/capture.md).
    public var capturesDir: String { networkDir + "/" + Name.captures }
    /// Where the worker listens for its switch's capture plugin (`vdecapture/start PATH`): one
    /// stream of ``CaptureRecord``s of every frame entering the switch, while a segment capture runs.
    public var captureSink: String { capturesDir + "/" + Name.captureSink }
    /// Where the capture command connects for the capture `id` (made by `startCapture`, removed
    /// once the command connected or gave up).
    public func captureSocket(_ id: CaptureID) -> String { capturesDir + "/" + id.rawValue + ".sock" }

    private enum CodingKeys: String, CodingKey { case networkDir, ctlDir, managementSocket }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(
                networkDir: container.decode(String.self, forKey: .networkDir),
                ctlDir: container.decode(String.self, forKey: .ctlDir),
                managementSocket: container.decodeIfPresent(String.self, forKey: .managementSocket))
        } catch let error as VDEError {
            throw DecodingError.dataCorrupted(.init(codingPath: container.codingPath, debugDescription: error.message))
        }
    }
}
