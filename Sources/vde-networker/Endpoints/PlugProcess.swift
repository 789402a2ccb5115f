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

/// Which program plugs an endpoint's tap into the switch (issue 13).
enum PlugKind: Sendable, Equatable, CustomStringConvertible {
    /// `vde_plug2tap`: an unimpaired endpoint, which pays nothing for link shaping.
    case plug2tap
    /// `wirefilter -v CTLDIR:tap://NAME`: an impaired endpoint. The link emulator is the plug
    /// itself (one process, no extra hop), changed live through its management socket.
    case wirefilter

    var program: String {
        switch self {
        case .plug2tap: "vde_plug2tap"
        case .wirefilter: "wirefilter"
        }
    }

    var description: String { program }

    /// The plug `link` needs; nil when the cable is pulled (no plug runs at all).
    static func wanted(for link: LinkSettings?) -> PlugKind? {
        guard let link else { return .plug2tap }
        if link.down { return nil }
        return link.impairment.isEmpty ? .plug2tap : .wirefilter
    }
}

/// A wirefilter plug's settings and files (every path from ``NetworkPaths``, named after the
/// endpoint's host tap name, which is short and unique in the network).
struct WirefilterSpec: Sendable, Equatable {
    var impairment: LinkImpairment
    /// `wirefilter -M`: its management socket, for live changes.
    var managementSocket: String
    /// `wirefilter --pidfile`: where the daemon writes its bare pid (and removes it at exit).
    var pidFile: String

    init(impairment: LinkImpairment, tap: TapName, paths: NetworkPaths) {
        self.impairment = impairment
        managementSocket = paths.linkManagementSocket(tap: tap)
        pidFile = paths.linkPIDFile(tap: tap)
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

    private init(
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

    /// `[nsenter --net=NS --] wirefilter -v CTLDIR:tap://IFNAME -M SOCKET --mgmtmode 600 --daemon
    /// --pidfile FILE [-d MS[+MS] -l % -L N -D % -b BYTES/s]`. `-v` splits at the first colon,
    /// so the switch's path (which may hold none) comes first; an interface name holds no colon.
    static func wirefilterArgv(ctlDir: String, location: PlugLocation, spec: WirefilterSpec, executables: Executables)
        -> [String]
    {
        let argv =
            [
                executables.wirefilter, "-v", wirefilterPlugs(ctlDir: ctlDir, interface: interface(of: location)),
                "-M", spec.managementSocket, "--mgmtmode", "600", "--daemon", "--pidfile", spec.pidFile,
            ] + WirefilterSettings.options(for: spec.impairment)
        return command(argv, at: location, executables: executables)
    }

    /// The `-v` argument: `CTLDIR:tap://IFNAME`.
    static func wirefilterPlugs(ctlDir: String, interface: String) -> String { "\(ctlDir):tap://\(interface)" }

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

    /// Starts a wirefilter daemon on the tap at `location`, like the switch (`vde_switch -d -p`):
    /// in the foreground it would exit at EOF on stdin, so it runs `--daemon --pidfile`, watched
    /// through a pidfd and never reaped by the worker (the supervisor is child subreaper).
    ///
    /// Measured with wirefilter 2.3.2: its launcher exits 1 with the reason on stderr when the
    /// switch is missing (`vdeplug PATH: No such file or directory`) or its management socket's
    /// path exists (`mgmt bind Address already in use`); it exits 0 and its daemon exits at once
    /// when the pid file exists; it exits 0 and CREATES A NEW TAP when `tap://NAME` names no
    /// interface in its namespace, so the caller launches it only where the tap is known to be
    /// (as for vde_plug2tap). On SIGTERM the daemon removes its pid file and its socket.
    static func startWirefilter(
        ctlDir: String, location: PlugLocation, spec: WirefilterSpec, executables: Executables, logger: Logger,
        readyTimeout: Duration = .seconds(5)
    ) async throws(PlugError) -> PlugProcess {
        let directory = FileSystem.parent(of: spec.pidFile)
        do {
            _ = try FileSystem.makeDirectories(directory, mode: 0o700)
        } catch {
            throw .cannotPrepare(path: directory, reason: "\(error)")
        }
        await removeStaleFiles(spec, ctlDir: ctlDir, logger: logger)
        let argv = wirefilterArgv(ctlDir: ctlDir, location: location, spec: spec, executables: executables)
        logger.debug("starting \(argv.joined(separator: " "))")
        let launcher: ChildProcess
        do {
            launcher = try await ChildProcess.spawn(name: "wirefilter", argv: argv, logger: logger)
        } catch {
            throw .spawnFailed(error)
        }
        let deadline = ContinuousClock.now + readyTimeout
        guard await launcher.waitForExit(timeout: readyTimeout), let exit = launcher.exit else {
            await launcher.terminate()
            throw .daemonNotStarted(
                program: PlugKind.wirefilter.program, reason: "its launcher did not exit within \(readyTimeout)")
        }
        guard exit.status == .exited(0) else {
            throw .exitedEarly(program: PlugKind.wirefilter.program, pid: launcher.pid, exit: exit)
        }
        // The daemon writes the file after its fork, a moment after the launcher's exit.
        var identity: ProcessIdentity?
        while true {
            identity = daemonIdentity(pidFile: spec.pidFile)
            if identity != nil || ContinuousClock.now >= deadline { break }
            try? await Task.sleep(for: .milliseconds(2))
        }
        guard let identity, let process = try? WatchedProcess(identity) else {
            throw .daemonNotStarted(
                program: PlugKind.wirefilter.program,
                reason: "its daemon wrote no pid file at \(spec.pidFile), or exited at once"
                    + (exit.lastErrorLines.last.map { " (\($0))" } ?? ""))
        }
        return PlugProcess(
            child: process, location: location, kind: .wirefilter, switchPID: launcher.pid,
            wirefilter: (spec.managementSocket, spec.pidFile))
    }

    /// The wirefilter whose bare pid `pidFile` holds, while it runs wirefilter.
    static func daemonIdentity(pidFile: String) -> ProcessIdentity? {
        guard let text = FileSystem.readFile(pidFile, limit: 64),
            case let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }), words.count == 1,
            let pid = pid_t(words[0]), pid > 1, let identity = ProcessIdentity.of(pid: pid),
            identity.isRunning(program: PlugKind.wirefilter.program)
        else { return nil }
        return identity
    }

    /// What a killed wirefilter of this tap left: a wirefilter still running with this very
    /// management socket in its argv (a leftover nothing adopted) is stopped; then its pid file
    /// and socket go (a new daemon exits at once on either).
    static func removeStaleFiles(_ spec: WirefilterSpec, ctlDir: String, logger: Logger) async {
        if let identity = daemonIdentity(pidFile: spec.pidFile), let argv = ProcFS.arguments(of: identity.pid),
            zip(argv, argv.dropFirst()).contains(where: { $0 == ("-M", spec.managementSocket) })
        {
            logger.info(
                "stopping a wirefilter left on this tap",
                metadata: ["pid": "\(identity.pid)", "file": "\(spec.pidFile)"])
            await identity.stop(program: PlugKind.wirefilter.program)
        }
        removeFiles(managementSocket: spec.managementSocket, pidFile: spec.pidFile)
    }

    /// Removes what a dead wirefilter left: its pid file unless it names a running wirefilter,
    /// its management socket unless something listens there. So a stop that finishes after a
    /// new wirefilter took the same names (a switch restart stops the old plugs in the
    /// background) leaves the new one's files alone.
    static func removeFiles(managementSocket: String, pidFile: String) {
        if FileSystem.isRegularFile(pidFile), daemonIdentity(pidFile: pidFile) == nil {
            _ = FileSystem.removeFile(pidFile)
        }
        if FileSystem.isSocket(managementSocket), !listens(managementSocket) {
            _ = FileSystem.removeFile(managementSocket)
        }
    }

    /// True when a connection to the socket at `path` is accepted.
    static func listens(_ path: String) -> Bool {
        guard let socket = try? UnixSocket.connect(to: path, deadline: ContinuousClock.now + .milliseconds(100)) else {
            return false
        }
        socket.close()
        return true
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

    /// Gives a wirefilter plug exactly `impairment`, live, through its management socket (every
    /// parameter set, see ``WirefilterSettings/commands(for:)``). No-op for vde_plug2tap.
    func apply(_ impairment: LinkImpairment) async throws(ManagementError) {
        guard let socket = managementSocket else { return }
        let client = ManagementClient(socketPath: socket, timeout: .seconds(1), console: .wirefilter)
        let commands = WirefilterSettings.commands(for: impairment)
        let replies = try await client.run(commands)
        for (command, reply) in zip(commands, replies) where !reply.succeeded {
            throw ManagementError(
                socketPath: socket, reason: "answered '\(command)' with \(reply.code) \(reply.message)",
                console: .wirefilter)
        }
    }

    /// Waits until a switch port shows this plug (``switchPID``) and returns the port. Without a management
    /// socket it can only check that the plug is still running after a short while.
    ///
    /// Polls every 3 ms: a plug takes a few milliseconds to connect, every CreateEndpoint waits
    /// here, and one look at the port list costs the switch well under a millisecond.
    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?, timeout: Duration)
        async throws(PlugError) -> Int?
    {
        guard let management else {
            try? await Task.sleep(for: .milliseconds(150))
            if let exit = child.exit { throw .exitedEarly(program: kind.program, pid: pid, exit: exit) }
            return nil
        }
        let deadline = ContinuousClock.now + timeout
        var lastError: ManagementError?
        while true {
            if let exit = child.exit { throw .exitedEarly(program: kind.program, pid: pid, exit: exit) }
            do {
                let ports = try await management.ports()
                lastError = nil
                if let port = ports.first(where: { $0.peerPID == switchPID }) { return port.port }
            } catch {
                lastError = error
            }
            if ContinuousClock.now >= deadline {
                if let exit = child.exit { throw .exitedEarly(program: kind.program, pid: pid, exit: exit) }
                throw .notAttached(pid: pid, ctlDir: ctlDir, waited: timeout, cause: lastError?.description)
            }
            try? await Task.sleep(for: .milliseconds(3))
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
