import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Why the network's switch could not be started or used.
enum SwitchError: ReportableError, CustomStringConvertible {
    case invalidSpec(String)
    /// `own` mode, but a switch already answers at the ctl dir.
    case alreadyRunning(ctlDir: String)
    /// The management socket's path is a socket that accepts connections (a live switch, or any
    /// other program's socket): it is never removed.
    case managementSocketInUse(path: String)
    /// A name of the switch's in the ctl dir accepts connections, or is not a socket, although no
    /// switch answers there: it is left alone.
    case ctlNameInUse(path: String, reason: String)
    /// A directory the switch would be started in cannot be used.
    case unusableDirectory(path: String, option: String, reason: String)
    /// The directory holds things the plugin did not put there (and no marker of ours).
    case directoryNotOurs(path: String, option: String, names: [String])
    /// The directory carries the marker of another network.
    case directoryOfAnotherNetwork(path: String, option: String, owner: NetworkID?)
    /// `external` mode, and nothing answers at the ctl dir.
    case notAnswering(ctlDir: String, errno: Int32)
    /// Something accepts connections at the ctl dir but gives no port: full or hung.
    case noPort(ctlDir: String)
    case cannotCreateDirectory(SystemCallError)
    case spawnFailed(ChildSpawnError)
    /// vde_switch exited before it answered.
    case exited(ctlDir: String, exit: ChildExit)
    case notReady(ctlDir: String, waited: Duration)

    var description: String {
        switch self {
        case .invalidSpec(let reason):
            reason
        case .alreadyRunning(let ctlDir):
            "a VDE switch already answers at \(ctlDir): stop it, or use it with -o socket_dir=\(ctlDir) (add -o create_sockets=true to start one when none runs)"
        case .managementSocketInUse(let path):
            "\(path) is a socket that accepts connections (another switch or another program uses it); it was left alone: pick another -o management_socket"
        case .ctlNameInUse(let path, let reason):
            "\(path) \(reason), although no VDE switch answers there; it was left alone: remove it yourself if it is stale, or pick another -o socket_dir"
        case .unusableDirectory(let path, let option, let reason):
            "cannot use \(path) for -o \(option): \(reason)"
        case .directoryNotOurs(let path, let option, let names):
            "-o \(option): \(path) is not empty (it holds \(names.prefix(5).joined(separator: ", "))\(names.count > 5 ? ", ..." : "")) and was not set up by vde-supervisor; the plugin starts a switch only in a directory that does not exist or is empty, and never touches other programs' files: pick a new directory, e.g. \(path)/vde-\(FileSystem.lastComponent(of: path))"
        case .directoryOfAnotherNetwork(let path, let option, let owner):
            "-o \(option): \(path) belongs to vde network \(owner?.short ?? "?") (its marker file \(SwitchDirectory.markerName) says so): pick another path"
        case .notAnswering(let ctlDir, let code):
            "no VDE switch answers at \(ctlDir) (\(SystemCallError.text(code))): start one with vde_switch -s \(ctlDir), or add -o create_sockets=true"
        case .noPort(let ctlDir):
            "the VDE switch at \(ctlDir) accepts connections but gives no port within 1 s: all its ports may be in use (vde_switch -n), or it hangs"
        case .cannotCreateDirectory(let error):
            "cannot create the switch's directory: \(error)"
        case .spawnFailed(let error):
            "\(error); is the vde2 package installed?"
        case .exited(let ctlDir, let exit):
            "vde_switch for \(ctlDir) \(exit)"
        case .notReady(let ctlDir, let waited):
            "vde_switch for \(ctlDir) did not answer within \(waited.milliseconds / 1000) s"
        }
    }

    var vdeError: VDEError {
        switch self {
        case .invalidSpec: .invalid(description)
        case .alreadyRunning, .managementSocketInUse, .ctlNameInUse, .directoryNotOurs, .directoryOfAnotherNetwork:
            .conflict(description)
        case .unusableDirectory: .invalid(description)
        case .notAnswering, .noPort: .unavailable(description)
        default: .system(description)
        }
    }
}

/// A `vde_switch` this worker runs in the foreground, with a pipe on its stdin held open.
///
/// vde_switch exits at EOF on stdin and then removes its ctl dir and management socket: closing
/// the pipe is the clean stop, and if the worker dies (even by SIGKILL) the kernel closes the pipe
/// and the switch follows; its plugs then exit with it.
final class SwitchProcess: Sendable {
    let child: ChildProcess
    let files: SwitchFiles
    var spec: SwitchSpec { files.spec }

    var pid: pid_t { child.pid }

    private init(child: ChildProcess, files: SwitchFiles) {
        self.child = child
        self.files = files
    }

    /// `vde_switch -s CTL -M MGMT -n PORTS+1 [-g GROUP -m 0660]`: `-n N` gives N-1 ports to clients,
    /// since port 0 is never allocated.
    static func argv(spec: SwitchSpec, executables: Executables) -> [String] {
        var argv = [executables.vdeSwitch, "-s", spec.paths.ctlDir]
        if let management = spec.paths.managementSocket { argv += ["-M", management] }
        argv += ["-n", String(spec.numPorts + 1)]
        if let group = spec.group { argv += ["-g", group.rawValue, "-m", "0660"] }
        return argv
    }

    /// Starts the switch and returns once a libvdeplug probe gets a port from it.
    static func start(
        files: SwitchFiles, executables: Executables, logger: Logger,
        readyTimeout: Duration = .seconds(5)
    ) async throws(SwitchError) -> SwitchProcess {
        let spec = files.spec
        let argv = argv(spec: spec, executables: executables)
        logger.debug("starting \(argv.joined(separator: " "))")
        let child: ChildProcess
        do {
            child = try await ChildProcess.spawn(name: "switch", argv: argv, holdStandardInput: true, logger: logger)
        } catch {
            throw .spawnFailed(error)
        }
        let started = ContinuousClock.now
        let result = await SwitchProbe.waitUntilAnswering(ctlDir: spec.paths.ctlDir, timeout: readyTimeout) {
            child.hasExited
        }
        if result == .answers, !child.hasExited {
            logger.info(
                "switch up",
                metadata: [
                    "pid": "\(child.pid)", "ctl": "\(spec.paths.ctlDir)",
                    "ms": "\((ContinuousClock.now - started).milliseconds)",
                ])
            return SwitchProcess(child: child, files: files)
        }
        // Give a dying switch a moment to say why.
        _ = await child.waitForExit(timeout: .milliseconds(200))
        if let exit = child.exit { throw .exited(ctlDir: spec.paths.ctlDir, exit: exit) }
        let process = SwitchProcess(child: child, files: files)
        await process.stop(logger: logger)
        throw .notReady(ctlDir: spec.paths.ctlDir, waited: readyTimeout)
    }

    /// Closes the switch's stdin, waits up to `grace` for it to exit, then kills it; finally removes
    /// whatever of its sockets it left behind (only its own names, only when nobody listens).
    func stop(logger: Logger) async { await stop(logger: logger, grace: .seconds(2)) }

    func stop(logger: Logger, grace: Duration) async {
        await child.closeStandardInput()
        if !(await child.waitForExit(timeout: grace)) {
            logger.warning("switch did not exit after its stdin was closed; killing it", metadata: ["pid": "\(pid)"])
            child.send(SIGKILL)
            _ = await child.waitForExit(timeout: .seconds(2))
        }
        files.removeLeftovers(logger: logger)
    }
}

/// Where one network's switch keeps its sockets, and the only names the plugin removes there
/// (see ``SwitchDirectory``).
struct SwitchFiles: Sendable {
    let spec: SwitchSpec
    let ctl: SwitchDirectory
    /// The management socket's directory and name, when the spec has one.
    let management: (directory: SwitchDirectory, name: String)?

    init(spec: SwitchSpec, networkID: NetworkID) {
        self.spec = spec
        ctl = SwitchDirectory(path: spec.paths.ctlDir, networkID: networkID, networkDir: spec.paths.networkDir)
        management = spec.paths.managementSocket.map {
            (
                SwitchDirectory(
                    path: FileSystem.parent(of: $0), networkID: networkID, networkDir: spec.paths.networkDir),
                FileSystem.lastComponent(of: $0)
            )
        }
    }

    /// What ``prepare(logger:)`` claimed; ``undo()`` gives back what this attempt took (the
    /// markers it wrote, the directories it created) when the switch then does not start.
    struct Prepared {
        fileprivate var claims: [(SwitchDirectory, SwitchDirectory.Claim)] = []

        /// Directories created, outermost first.
        var created: [String] { claims.flatMap { $0.1.created } }

        func undo() {
            for (directory, claim) in claims.reversed() { directory.undo(claim) }
        }
    }

    /// Claims the directories (see ``SwitchDirectory/claim(option:)``) and removes the stale
    /// sockets a killed switch left, before a switch is started. Throws, removing nothing of
    /// anyone else's and undoing its own claims, when a directory is not the plugin's or a
    /// name is in use.
    func prepare(logger: Logger) throws(SwitchError) -> Prepared {
        var claims: [(SwitchDirectory, SwitchDirectory.Claim)] = []
        do throws(SwitchError) {
            claims.append((ctl, try ctl.claim(option: "socket_dir")))
            if let management {
                claims.append((management.directory, try management.directory.claim(option: "management_socket")))
                let name = management.name
                switch management.directory.removeStale(where: { $0 == name }, logger: logger)[name] {
                case .live?: throw SwitchError.managementSocketInUse(path: spec.paths.managementSocket ?? name)
                case .notASocket?:
                    throw SwitchError.unusableDirectory(
                        path: spec.paths.managementSocket ?? name, option: "management_socket",
                        reason: "it exists and is not a socket")
                case .removed?, nil: break
                }
            }
            for (name, outcome) in ctl.removeStale(where: SwitchDirectory.isSwitchName, logger: logger).sorted(by: {
                $0.key < $1.key
            }) {
                switch outcome {
                case .live:
                    throw SwitchError.ctlNameInUse(path: spec.paths.ctlDir + "/" + name, reason: "accepts connections")
                case .notASocket:
                    throw SwitchError.ctlNameInUse(path: spec.paths.ctlDir + "/" + name, reason: "is not a socket")
                case .removed: break
                }
            }
        } catch {
            // Nothing of this attempt may stay where the user pointed us.
            Prepared(claims: claims).undo()
            throw error
        }
        return Prepared(claims: claims)
    }

    /// Removes the sockets a stopped (or killed) switch left: the switch's own names in the ctl
    /// dir and the management socket, each only when nobody listens on it.
    func removeLeftovers(logger: Logger) {
        ctl.removeStale(where: SwitchDirectory.isSwitchName, logger: logger)
        if let management {
            let name = management.name
            management.directory.removeStale(where: { $0 == name }, logger: logger)
        }
    }

    /// After the switch is gone for good: the markers, then the directories if empty.
    func release(logger: Logger) {
        ctl.release(logger: logger)
        management?.directory.release(logger: logger)
    }
}

/// `<network dir>/switch.pid`: the identity (pid and start time) of the switch the plugin
/// started, so that a new worker finds a switch its predecessor left running (an upstream
/// vde_switch watches stdin only when it is a tty, so it may outlive a killed worker) and stops it.
struct SwitchPIDFile: Sendable {
    static let program = "vde_switch"
    let file: PIDFile
    var path: String { file.path }

    init(path: String) { file = PIDFile(path: path) }

    func write(pid: pid_t, logger: Logger) {
        guard let identity = ProcessIdentity.of(pid: pid) else { return }
        do {
            try file.write(identity)
        } catch {
            logger.warning("cannot keep the switch pid file: \(error)")
        }
    }

    func remove() { file.remove() }

    /// The switch the file names, when that very process still runs vde_switch.
    func runningSwitch() -> ProcessIdentity? {
        file.runningProcess(program: Self.program)
    }

    /// Stops a switch left by an earlier worker (pid, start time and program must all match) and
    /// removes the file. Returns the identity it stopped.
    @discardableResult
    func stopLeftover(logger: Logger) async -> ProcessIdentity? {
        defer { remove() }
        guard let identity = runningSwitch() else { return nil }
        logger.info(
            "stopping a switch left behind by an earlier worker",
            metadata: ["pid": "\(identity.pid)", "file": "\(path)"])
        await identity.stop(program: Self.program, grace: .seconds(1))
        return identity
    }
}
