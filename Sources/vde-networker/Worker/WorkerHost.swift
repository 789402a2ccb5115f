import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Everything outside the worker's own logic that it acts on: the switch, the plugs, the taps,
/// the switch's management socket and the containers' namespaces. The real ones start
/// processes and make taps (root); the unit tests (Tests/NetworkerTests) put fakes here, so
/// that restarts, tap-gone, re-plug, deletion markers and a full switch run in milliseconds,
/// without root.
struct WorkerHost: Sendable {
    var switches: any SwitchLauncher
    var plugs: any PlugLauncher
    /// The network's uplink (`vde_plug vde://CTLDIR URL`).
    var uplinks: any UplinkLauncher
    var taps: any TapHost
    /// A client of the switch's management socket at `path`, each exchange within `timeout`.
    var management: @Sendable (_ path: String, _ timeout: Duration) -> any SwitchManagement
    /// What a sandbox key path is right now (see ``SandboxFile``).
    var sandboxFile: @Sendable (_ key: SandboxKey) -> SandboxFile
    /// The links inside the namespace at `key`; throws when it cannot be entered or listed.
    var namespaceLinks: @Sendable (_ key: SandboxKey) async throws -> [LinkInfo]
    /// An endpoint capture's frames: the interface with `macAddress` in the namespace at
    /// `namespace` (nil: the worker's own). See ``PacketSocket``.
    var openFrameSource: @Sendable (_ namespace: String?, _ macAddress: MACAddress) async throws -> any FrameSource = {
        _, _ in throw CaptureError(vdeError: .unavailable("endpoint captures are not available here"))
    }
    /// The switch's capture plugin, checked (``Executables/checkedCapturePlugin()``).
    var capturePluginPath: @Sendable () throws -> String = {
        throw CaptureError(vdeError: .unavailable("segment captures are not available here"))
    }
    /// Runs `argv` in the background, best effort, its outcome ignored: an endpoint's
    /// unsolicited ARP (``Worker/announce(endpointID:at:)``).
    var runDetached: @Sendable (_ argv: [String]) -> Void = { _ in }

    /// The real thing: vde_switch, vde_plug2tap, taps by ioctl and `ip`, nsenter.
    static func system(executables: Executables, logger: Logger) -> WorkerHost {
        let runner = CommandRunner(logger: logger)
        let sessions = ManagementSessions()
        let management: @Sendable (String, Duration) -> any SwitchManagement = { path, timeout in
            ManagementClient(socketPath: path, timeout: timeout, session: sessions.session(for: path))
        }
        return WorkerHost(
            switches: SystemSwitchLauncher(executables: executables, management: management),
            plugs: SystemPlugLauncher(executables: executables),
            uplinks: SystemUplinkLauncher(executables: executables),
            taps: Taps(ip: executables.ip, runner: runner),
            management: management,
            sandboxFile: SandboxFile.inspect,
            namespaceLinks: { key in
                try await NetworkNamespace(path: key.rawValue).links(runner: runner, executables: executables)
            },
            openFrameSource: { namespace, macAddress in
                // A thread of its own enters the namespace (clinux_packet_open blocks meanwhile).
                let opened = await Blocking.run { () -> Result<PacketSocket, CaptureError> in
                    do throws(CaptureError) {
                        return .success(try PacketSocket.open(namespace: namespace, macAddress: macAddress))
                    } catch {
                        return .failure(error)
                    }
                }
                return try opened.get()
            },
            capturePluginPath: { try executables.checkedCapturePlugin() },
            runDetached: { argv in Task.detached { _ = try? await runner.run(argv) } })
    }
}

// MARK: Switch

/// Starts and probes switches.
protocol SwitchLauncher: Sendable {
    /// Does a switch answer at `ctlDir`? (See ``SwitchProbe``.)
    func probe(ctlDir: String, timeout: Duration) async -> ProbeResult
    /// Starts a switch as `files.spec` says and returns once it answers.
    func start(files: SwitchFiles, logger: Logger) async throws(SwitchError) -> any RunningSwitch
    /// The switch an earlier worker of the network started for `files.spec` and left running,
    /// to adopt (nil: none, or not proven to be that switch). A switch the pid file proves to
    /// be ours but for other paths is stopped; the file of a switch not adopted is removed.
    func adoptLeftover(files: SwitchFiles, logger: Logger) async -> (any RunningSwitch)?
}

extension SwitchLauncher {
    func probe(ctlDir: String) async -> ProbeResult { await probe(ctlDir: ctlDir, timeout: .seconds(1)) }
}

/// A switch the worker started or adopted.
protocol RunningSwitch: AnyObject, Sendable {
    var pid: pid_t { get }
    var hasExited: Bool { get }
    /// Calls `handler` once when the switch exits, at once if it already has.
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void)
    /// Waits at most `timeout` for its exit; true when it has exited.
    func waitForExit(timeout: Duration) async -> Bool
    /// Stops it and removes what it left (see ``SwitchProcess/stop(logger:grace:)``).
    func stop(logger: Logger) async
    /// Stops watching it (its pidfd is closed); the switch runs on.
    func stopWatching()
}

/// The management socket's commands the worker uses (see ``ManagementClient``).
protocol SwitchManagement: Sendable {
    func ports() async throws(ManagementError) -> [PortCounters]
    func portEntries() async throws(ManagementError) -> [PortEntry]
    func macTable() async throws(ManagementError) -> [MACTableEntry]
    func closeEndpoint(port: Int, id: Int) async throws(ManagementError)
    func usablePorts() async throws(ManagementError) -> Int?
    /// Runs commands in order on one connection (the capture plugin's, see ``CapturePlugin``).
    func run(_ commands: [String]) async throws(ManagementError) -> [ManagementReply]
}

struct SystemSwitchLauncher: SwitchLauncher {
    var executables: Executables
    /// The worker's client of a management socket (``WorkerHost/management``), which also
    /// confirms that a switch just started answers
    /// (``SwitchProcess/confirmAnswering(until:management:logger:)``).
    var management: @Sendable (_ path: String, _ timeout: Duration) -> any SwitchManagement

    func probe(ctlDir: String, timeout: Duration) async -> ProbeResult {
        await SwitchProbe.probe(ctlDir: ctlDir, timeout: timeout)
    }

    func start(files: SwitchFiles, logger: Logger) async throws(SwitchError) -> any RunningSwitch {
        let management = files.spec.paths.managementSocket.map { self.management($0, .seconds(1)) }
        return try await SwitchProcess.start(
            files: files, executables: executables, management: management, logger: logger)
    }

    func adoptLeftover(files: SwitchFiles, logger: Logger) async -> (any RunningSwitch)? {
        let pidFile = SwitchPIDFile(path: files.spec.paths.switchPIDFile)
        switch pidFile.leftover(ctlDir: files.spec.paths.ctlDir) {
        case .adoptable(let identity):
            if let adopted = SwitchProcess.adopt(identity, files: files, logger: logger) { return adopted }
            pidFile.remove()
        case .otherSwitch:
            await pidFile.stopLeftover(logger: logger)
        case .none:
            if FileSystem.exists(pidFile.path) {
                logger.info(
                    "ignoring a switch pid file that names no running switch", metadata: ["file": "\(pidFile.path)"])
            }
            pidFile.remove()
        }
        return nil
    }
}

extension SwitchProcess: RunningSwitch {
    var hasExited: Bool { process.hasExited }
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void) { process.onExit(handler) }
    func waitForExit(timeout: Duration) async -> Bool { await process.waitForExit(timeout: timeout) }
    func stopWatching() { process.stopWatching() }
}

extension ManagementClient: SwitchManagement {}

// MARK: Plugs and taps

/// Starts plugs, and finds those an earlier worker left.
protocol PlugLauncher: Sendable {
    /// Starts vde_plug2tap, or with `wirefilter` a wirefilter daemon with those settings.
    func start(ctlDir: String, location: PlugLocation, wirefilter: WirefilterSpec?, logger: Logger)
        async throws(PlugError) -> any RunningPlug
    /// Adopts the running plugs of `restoring` an earlier worker left (listed in `pidFiles`),
    /// and stops the others (see ``PlugPIDFiles/takeOver(restoring:logger:adopt:)``).
    func adoptLeftovers(pidFiles: PlugPIDFiles, restoring: [EndpointSpec], paths: NetworkPaths, logger: Logger) async
        -> PlugPIDFiles.Leftovers
}

/// A plug the worker started (see ``PlugProcess``).
protocol RunningPlug: AnyObject, Sendable {
    var pid: pid_t { get }
    var kind: PlugKind { get }
    /// The pid the switch shows on the plug's port (see ``PlugProcess/switchPID``).
    var switchPID: pid_t { get }
    /// A wirefilter's management socket; nil for vde_plug2tap.
    var managementSocket: String? { get }
    /// Gives a wirefilter exactly `impairment`, live (see ``PlugProcess/apply(_:)``).
    func apply(_ impairment: LinkImpairment) async throws(ManagementError)
    var hasExited: Bool { get }
    /// Calls `handler` once when the plug exits, at once if it already has.
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void)
    /// Waits until a switch port shows the plug and returns the port (nil: cannot tell).
    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?, timeout: Duration)
        async throws(PlugError) -> Int?
    /// Stops watching the tap, then stops the plug.
    func terminate(grace: Duration) async
    /// What the kernel says about the plug's tap (for polling where no watch can be set up).
    func tapAttachment() -> TapAttachment
    /// `onGone` runs once when the tap is deleted; throws when no watch can be set up.
    func watchTap(onGone: @escaping @Sendable () -> Void) throws(TapWatch.Unavailable)
    func stopWatchingTap()
    var isWatchingTap: Bool { get }
    /// Stops watching the tap and the process; the plug runs on.
    func stopWatching()
}

extension RunningPlug {
    func terminate() async { await terminate(grace: .milliseconds(500)) }

    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?) async throws(PlugError) -> Int? {
        try await waitUntilAttached(ctlDir: ctlDir, management: management, timeout: .seconds(2))
    }
}

struct SystemPlugLauncher: PlugLauncher {
    var executables: Executables

    func start(ctlDir: String, location: PlugLocation, wirefilter: WirefilterSpec?, logger: Logger)
        async throws(PlugError) -> any RunningPlug
    {
        if let wirefilter {
            return try await PlugProcess.startWirefilter(
                ctlDir: ctlDir, location: location, spec: wirefilter, executables: executables, logger: logger)
        }
        return try await PlugProcess.start(ctlDir: ctlDir, location: location, executables: executables, logger: logger)
    }

    func adoptLeftovers(pidFiles: PlugPIDFiles, restoring: [EndpointSpec], paths: NetworkPaths, logger: Logger) async
        -> PlugPIDFiles.Leftovers
    {
        await pidFiles.takeOver(restoring: restoring, logger: logger) { identity, endpoint in
            PlugProcess.adopt(identity, endpoint: endpoint, paths: paths)
        }
    }
}

extension PlugProcess: RunningPlug {
    var hasExited: Bool { child.hasExited }
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void) { child.onExit(handler) }
}

// MARK: Uplink

/// Starts the network's uplink, and finds the one an earlier worker left.
protocol UplinkLauncher: Sendable {
    /// Starts `vde_plug vde://CTLDIR URL` (see ``UplinkProcess``); returns once it runs.
    func start(ctlDir: String, url: UplinkURL, logger: Logger) async throws(UplinkError) -> any RunningUplink
    /// The uplink `pidFile` names, when it is beyond doubt this network's uplink with `url` on
    /// `ctlDir` (nil: none). A vde_plug the file proves ours but with other arguments (or any,
    /// when `url` is nil) is stopped; the file of an uplink not adopted is removed.
    func adoptLeftover(pidFile: UplinkPIDFile, ctlDir: String, url: UplinkURL?, logger: Logger) async
        -> (any RunningUplink)?
}

/// An uplink the worker started or adopted.
protocol RunningUplink: AnyObject, Sendable {
    var pid: pid_t { get }
    var hasExited: Bool { get }
    /// Calls `handler` once when it exits, at once if it already has.
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void)
    /// Waits until a switch port shows its pid and returns the port (nil: cannot tell).
    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?, timeout: Duration)
        async throws(UplinkError) -> Int?
    /// SIGTERM, SIGKILL after `grace`.
    func terminate(grace: Duration) async
    /// Stops watching it; it runs on (see ``Worker/detach(reason:)``).
    func stopWatching()
}

struct SystemUplinkLauncher: UplinkLauncher {
    var executables: Executables

    func start(ctlDir: String, url: UplinkURL, logger: Logger) async throws(UplinkError) -> any RunningUplink {
        try await UplinkProcess.start(ctlDir: ctlDir, url: url, executables: executables, logger: logger)
    }

    func adoptLeftover(pidFile: UplinkPIDFile, ctlDir: String, url: UplinkURL?, logger: Logger) async
        -> (any RunningUplink)?
    {
        switch pidFile.leftover(ctlDir: ctlDir, url: url) {
        case .adoptable(let identity):
            if let url, let adopted = UplinkProcess.adopt(identity, ctlDir: ctlDir, url: url) {
                logger.info("adopted the running uplink", metadata: ["pid": "\(identity.pid)", "url": "\(url)"])
                return adopted
            }
        case .otherUplink(let identity):
            logger.info(
                "stopping an uplink left behind by an earlier worker (not this network's uplink now)",
                metadata: ["pid": "\(identity.pid)", "file": "\(pidFile.path)"])
            await identity.stop(program: UplinkProcess.program)
        case .none:
            break
        }
        pidFile.remove()
        return nil
    }
}

extension UplinkProcess: RunningUplink {
    var hasExited: Bool { child.hasExited }
    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void) { child.onExit(handler) }
    func terminate(grace: Duration) async { await child.terminate(grace: grace) }
    func stopWatching() { child.stopWatching() }
}

/// Taps in the worker's (host) network namespace (see ``Taps``).
protocol TapHost: Sendable {
    func exists(_ name: TapName) -> Bool
    func isTunTap(_ name: TapName) -> Bool
    func existing(name: TapName, macAddress: MACAddress) -> Taps.Existing
    func create(name: TapName, macAddress: MACAddress, mtu: Int?) async throws(TapError)
    func delete(name: TapName) async throws(TapError)
}

extension TapHost {
    /// Deletes `name` if it is a tap in the host namespace; leaves anything else alone.
    func deleteIfTap(name: TapName) async throws(TapError) {
        guard exists(name), isTunTap(name) else { return }
        try await delete(name: name)
    }
}

extension Taps: TapHost {}
