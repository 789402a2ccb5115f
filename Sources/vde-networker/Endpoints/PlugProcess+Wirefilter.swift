import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

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

/// The wirefilter kind of plug (issue 13): how it is started, stopped, cleaned up after and
/// changed live.
extension PlugProcess {
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
        guard
            let identity = await ProcessIdentity.awaitDaemon(
                until: deadline, { daemonIdentity(pidFile: spec.pidFile) }),
            let process = try? WatchedProcess(identity)
        else {
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
}
