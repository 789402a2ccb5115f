import Logging
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Why a plug could not be attached.
enum PlugError: ReportableError, CustomStringConvertible {
    case spawnFailed(ChildSpawnError)
    /// The plug exited while it should have been attaching (`program`: vde_plug2tap, wirefilter).
    case exitedEarly(program: String = PlugKind.plug2tap.program, pid: pid_t, exit: ChildExit)
    /// A wirefilter's launcher exited 0 but its daemon never wrote its pid file (it exits at once
    /// when that file exists), or it did not exit in time.
    case daemonNotStarted(program: String, reason: String)
    /// The directory of the wirefilters' files cannot be made.
    case cannotPrepare(path: String, reason: String)
    /// The plug ran but no switch port showed its pid in time: a full or hung switch (vde_plug2tap
    /// then waits silently forever, without connectivity).
    case notAttached(pid: pid_t, ctlDir: String, waited: Duration, cause: String?)
    /// Every port of the switch is taken.
    case exhausted(ports: Int, ctlDir: String)
    /// A switch without a known management socket gave a probe no port.
    case noFreePort(ctlDir: String)

    var description: String {
        switch self {
        case .spawnFailed(let error):
            "\(error); is the vde2 package installed?"
        case .exitedEarly(let program, let pid, let exit):
            "\(program) (pid \(pid)) \(exit)"
        case .daemonNotStarted(let program, let reason):
            "\(program) did not start: \(reason)"
        case .cannotPrepare(let path, let reason):
            "cannot prepare \(path) for the endpoint's wirefilter: \(reason)"
        case .notAttached(let pid, let ctlDir, let waited, let cause):
            "the plug (pid \(pid)) did not get a port of the switch at \(ctlDir) within \(waited.milliseconds) ms"
                + (cause.map { " (\($0))" } ?? ": the switch may be full or hung")
        case .exhausted(let ports, let ctlDir):
            "all \(ports) ports of the switch at \(ctlDir) are in use; create the network with a larger -o num_switchports"
        case .noFreePort(let ctlDir):
            "the switch at \(ctlDir) gives no free port: all its ports seem in use (start it with a larger vde_switch -n), or it hangs"
        }
    }

    var vdeError: VDEError {
        switch self {
        case .exhausted, .noFreePort: .exhausted(description)
        default: .system(description)
        }
    }
}

/// Where a plug runs: on a tap in the host namespace, or on the tap inside a container's
/// namespace after dockerd moved (and renamed) it there.
enum PlugLocation: Sendable, Equatable, CustomStringConvertible {
    case host(tapName: TapName)
    case sandbox(path: SandboxKey, interface: String)

    var description: String {
        switch self {
        case .host(let tapName): "tap \(tapName)"
        case .sandbox(let path, let interface): "\(interface) in \(path)"
        }
    }
}

/// The kernel's view of a plug's tap: the `iff:` line of its `/dev/net/tun` fd in
/// `/proc/PID/fdinfo`. It names the tap wherever it lives (after a move and rename too) and is
/// empty once the tap is gone, which is when vde_plug2tap starts to spin instead of exiting.
enum TapAttachment: Sendable, Equatable {
    case attached(interface: String)
    case detached
    /// The plug has no tun fd (yet), or /proc cannot be read.
    case unknown

    /// Reads the `iff:` line of one fdinfo file.
    static func parse(fdinfo: String) -> TapAttachment {
        for line in fdinfo.split(separator: "\n", omittingEmptySubsequences: false) where line.hasPrefix("iff:") {
            let name = line.dropFirst(4).trimmingSpaces()
            return name.isEmpty ? .detached : .attached(interface: String(name))
        }
        return .unknown
    }
}

/// One plug joining an endpoint's tap to the switch: a `vde_plug2tap` (a child of this worker
/// in a process group of its own, without a parent-death signal, so that it outlives the
/// worker; it ignores SIGPIPE itself, measured: a dead worker's stderr pipe does not kill it),
/// a `wirefilter` daemon (``startWirefilter(ctlDir:location:spec:executables:logger:)``), or
/// either one that an earlier worker started and this one adopted
/// (``adopt(_:endpoint:paths:)``).
final class PlugProcess: Sendable {
    let child: any SupervisedProcess
    let location: PlugLocation
    let kind: PlugKind
    /// The pid the switch shows on the plug's port (`port/allprint`). For vde_plug2tap its own;
    /// for a wirefilter its launcher's: libvdeplug connects before `--daemon` forks, and the
    /// switch keeps the pid it was told then (measured: port `pid=12893`, daemon 12894).
    let switchPID: pid_t
    /// A wirefilter's management socket and pid file (nil for vde_plug2tap).
    let wirefilter: (managementSocket: String, pidFile: String)?
    /// The fd number of the plug's `/dev/net/tun`, found once.
    private let tunDescriptor = Mutex<Int?>(nil)
    /// The kernel's word when the tap goes (see ``TapWatch``); nil when none is set up.
    private let tapWatch = Mutex<TapWatch?>(nil)

    var pid: pid_t { child.pid }
    var managementSocket: String? { wirefilter?.managementSocket }

    /// Only the starters and ``adopt(_:endpoint:paths:)`` make one (this file, PlugProcess+Wirefilter.swift).
    init(
        child: any SupervisedProcess, location: PlugLocation, kind: PlugKind = .plug2tap, switchPID: pid_t? = nil,
        wirefilter: (managementSocket: String, pidFile: String)? = nil
    ) {
        self.child = child
        self.location = location
        self.kind = kind
        self.switchPID = switchPID ?? child.pid
        self.wirefilter = wirefilter
    }

    /// The interface name the plug opens: the host tap, or the container's interface.
    static func interface(of location: PlugLocation) -> String {
        switch location {
        case .host(let tapName): tapName.rawValue
        case .sandbox(_, let interface): interface
        }
    }

    /// Runs `argv` where `location` is: as is for the host, through nsenter for a sandbox.
    static func command(_ argv: [String], at location: PlugLocation, executables: Executables) -> [String] {
        switch location {
        case .host: argv
        case .sandbox(let path, _): NetworkNamespace(path: path.rawValue).command(argv, nsenter: executables.nsenter)
        }
    }

    /// `vde_plug2tap -s CTLDIR -- TAP`, or `nsenter --net=NS -- vde_plug2tap -s CTLDIR -- IFNAME`
    /// (`--`: an interface name is never read as an option).
    static func argv(ctlDir: String, location: PlugLocation, executables: Executables) -> [String] {
        command(
            [executables.vdePlug2tap, "-s", ctlDir, "--", interface(of: location)], at: location,
            executables: executables)
    }

    static func start(ctlDir: String, location: PlugLocation, executables: Executables, logger: Logger)
        async throws(PlugError) -> PlugProcess
    {
        let argv = argv(ctlDir: ctlDir, location: location, executables: executables)
        do {
            let child = try await ChildProcess.spawn(name: "plug", argv: argv, logger: logger)
            return PlugProcess(child: child, location: location)
        } catch {
            throw .spawnFailed(error)
        }
    }

    /// The plug an earlier worker started for `endpoint` and left running, when the process
    /// `identity` names is beyond doubt that plug (see ``identify(_:endpoint:paths:)``); nil
    /// otherwise.
    static func adopt(_ identity: ProcessIdentity, endpoint: EndpointSpec, paths: NetworkPaths) -> PlugProcess? {
        guard let (location, kind) = identify(identity, endpoint: endpoint, paths: paths),
            let process = try? WatchedProcess(identity)
        else { return nil }
        switch kind {
        case .plug2tap:
            return PlugProcess(child: process, location: location)
        case .wirefilter:
            let spec = WirefilterSpec(impairment: LinkImpairment(), tap: endpoint.tapName, paths: paths)
            return PlugProcess(
                child: process, location: location, kind: .wirefilter,
                switchPID: WirefilterPeer.switchPID(of: identity.pid, ctlDir: paths.ctlDir),
                wirefilter: (spec.managementSocket, spec.pidFile))
        }
    }

    /// Where the plug `identity` names runs and what it is, when it is this endpoint's plug on
    /// this switch: vde_plug2tap with `-s CTLDIR` and the interface last, or wirefilter with
    /// `-v CTLDIR:tap://IFNAME` and this endpoint's `-M` socket (pid and start time as written).
    /// In the host's namespace the interface must be the tap's name (a plug started by
    /// `addEndpoint`, whose tap dockerd moved later); otherwise the plug must run inside the
    /// endpoint's sandbox (a plug restarted there: it names the container's interface). Nil
    /// for anything else.
    static func identify(_ identity: ProcessIdentity, endpoint: EndpointSpec, paths: NetworkPaths)
        -> (PlugLocation, PlugKind)?
    {
        let ctlDir = paths.ctlDir
        guard let argv = ProcFS.arguments(of: identity.pid) else { return nil }
        let pairs = Array(zip(argv, argv.dropFirst()))
        let kind: PlugKind
        let interface: String
        if identity.isRunning(program: PlugKind.plug2tap.program) {
            guard let last = argv.last, pairs.contains(where: { $0 == ("-s", ctlDir) }) else { return nil }
            kind = .plug2tap
            interface = last
        } else if identity.isRunning(program: PlugKind.wirefilter.program) {
            let prefix = wirefilterPlugs(ctlDir: ctlDir, interface: "")
            guard pairs.contains(where: { $0 == ("-M", paths.linkManagementSocket(tap: endpoint.tapName)) }),
                let plugs = pairs.first(where: { $0.0 == "-v" && $0.1.hasPrefix(prefix) })?.1
            else { return nil }
            kind = .wirefilter
            interface = String(plugs.dropFirst(prefix.count))
        } else {
            return nil
        }
        guard !interface.isEmpty, let namespace = ProcFS.networkNamespace(of: identity.pid) else { return nil }
        if namespace == ProcFS.networkNamespace(of: getpid()) {
            return interface == endpoint.tapName.rawValue ? (.host(tapName: endpoint.tapName), kind) : nil
        }
        guard let key = endpoint.sandboxKey, FileSystem.fileID(key.rawValue) == namespace else { return nil }
        return (.sandbox(path: key, interface: interface), kind)
    }

    /// Waits until a switch port shows this plug (``switchPID``) and returns the port (nil
    /// without a management socket; see ``PortWait``).
    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?, timeout: Duration)
        async throws(PlugError) -> Int?
    {
        switch await PortWait.until(peerPID: switchPID, management: management, timeout: timeout, exit: { child.exit })
        {
        case .attached(let port): return port
        case .exited(let exit): throw .exitedEarly(program: kind.program, pid: pid, exit: exit)
        case .timedOut(let cause): throw .notAttached(pid: pid, ctlDir: ctlDir, waited: timeout, cause: cause)
        }
    }

    /// Starts watching the plug's tap: `onGone` runs once when the kernel deletes it (at once if
    /// it is gone already). Throws when no watch can be set up; the caller then polls
    /// ``tapAttachment()`` instead.
    func watchTap(onGone: @escaping @Sendable () -> Void) throws(TapWatch.Unavailable) {
        guard case .attached = tapAttachment(), let fd = tunDescriptor.withLock({ $0 }) else {
            throw TapWatch.Unavailable(description: "the plug has no tap open")
        }
        let watch = try TapWatch.start(pid: pid, tunDescriptor: Int32(fd), onGone: onGone)
        // A plug stopped meanwhile must not keep the duplicate (it would hold the tap).
        let previous = tapWatch.withLock { current in
            defer { current = watch }
            return current
        }
        previous?.close()
        if child.hasExited { stopWatchingTap() }
    }

    /// True while a ``TapWatch`` watches the tap.
    var isWatchingTap: Bool { tapWatch.withLock { $0 != nil } }

    /// Closes the watch's duplicate of the tap's descriptor, so that the next plug can attach to
    /// the tap; idempotent. Called whenever the plug is stopped or found exited.
    func stopWatchingTap() {
        let watch = tapWatch.withLock { current in
            defer { current = nil }
            return current
        }
        watch?.close()
    }

    /// Stops watching the tap and the process; the plug runs on (see ``Worker/detach(reason:)``).
    func stopWatching() {
        stopWatchingTap()
        child.stopWatching()
    }

    /// Stops watching the tap, then stops the plug (SIGTERM, SIGKILL after `grace`). A
    /// wirefilter removes its pid file and socket itself on SIGTERM; what a SIGKILL left goes here.
    func terminate(grace: Duration) async {
        stopWatchingTap()
        await child.terminate(grace: grace)
        if let wirefilter, child.hasExited {
            Self.removeFiles(managementSocket: wirefilter.managementSocket, pidFile: wirefilter.pidFile)
        }
    }

    /// What the kernel says about the plug's tap; cheap (a few readlinks and one small read).
    func tapAttachment() -> TapAttachment {
        let known = tunDescriptor.withLock { $0 }
        if let known, let info = ProcFS.descriptorInfo(of: pid, fd: Int32(known)) {
            return TapAttachment.parse(fdinfo: info)
        }
        guard let descriptors = ProcFS.descriptors(of: pid) else { return .unknown }
        for (fd, target) in descriptors where target == "/dev/net/tun" {
            guard let info = ProcFS.descriptorInfo(of: pid, fd: fd) else { continue }
            let attachment = TapAttachment.parse(fdinfo: info)
            if attachment != .unknown {
                tunDescriptor.withLock { $0 = Int(fd) }
                return attachment
            }
        }
        return .unknown
    }
}
