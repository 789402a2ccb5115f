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

/// The network's `vde_switch`, started detached (`-d -p <paths.switchPIDFile>`) so that it
/// outlives the worker (issue 11: the data path outlives its managers), and watched through its
/// pidfd (``WatchedProcess``): the worker is not its parent and never reaps it.
///
/// Measured with vde_switch 2.3.2: with `-d` it reports setup errors (a socket in use, an
/// unknown group) on stderr and exits with status 255 before it forks; after the fork it has
/// stdin, stdout and stderr on /dev/null, no longer exits at EOF on stdin, writes its pid to
/// the `-p` file (`O_EXCL`: a file already there makes the daemon exit, although its launcher
/// exited 0), and on SIGTERM removes its sockets, its ctl dir and that file.
final class SwitchProcess: Sendable {
    let process: WatchedProcess
    let files: SwitchFiles
    var spec: SwitchSpec { files.spec }

    var pid: pid_t { process.pid }

    private init(process: WatchedProcess, files: SwitchFiles) {
        self.process = process
        self.files = files
    }

    /// `vde_switch -d -p PIDFILE -s CTL -M MGMT -n PORTS+1 [-g GROUP -m 0660]`: `-n N` gives N-1
    /// ports to clients, since port 0 is never allocated. A network with an uplink gets one port
    /// more, the uplink's, so that `num_switchports` containers and VMs still fit.
    static func argv(spec: SwitchSpec, executables: Executables) -> [String] {
        var argv = [executables.vdeSwitch, "-d", "-p", spec.paths.switchPIDFile, "-s", spec.paths.ctlDir]
        if let management = spec.paths.managementSocket { argv += ["-M", management] }
        argv += ["-n", String(clientPorts(spec: spec) + 1)]
        if let group = spec.group { argv += ["-g", group.rawValue, "-m", "0660"] }
        // A hub sends every frame to every port (`-o hub=true`).
        if spec.hub { argv.append("-x") }
        return argv
    }

    /// The ports a switch started for `spec` gives to clients (its `-n` less port 0): the
    /// spec's, and one more for the uplink.
    static func clientPorts(spec: SwitchSpec) -> Int {
        spec.numPorts + (spec.uplink == nil ? 0 : 1)
    }

    /// Starts the switch and returns once its daemon runs (its pidfd open), while a probe
    /// confirms in the background that it gives ports (``confirmAnswering(until:logger:)``). The pid file
    /// must not name a running switch (the worker has adopted or stopped it); a stale one is
    /// removed first. On return the file holds the daemon's bare pid (``Worker/adopt(_:)`` rewrites it).
    static func start(
        files: SwitchFiles, executables: Executables, management: (any SwitchManagement)? = nil, logger: Logger,
        readyTimeout: Duration = .seconds(5)
    ) async throws(SwitchError) -> SwitchProcess {
        let spec = files.spec
        let pidFile = SwitchPIDFile(path: spec.paths.switchPIDFile)
        pidFile.remove()
        do {
            _ = try FileSystem.makeDirectories(spec.paths.networkDir, mode: 0o755)
        } catch {
            throw .cannotCreateDirectory(error)
        }
        let argv = argv(spec: spec, executables: executables)
        logger.debug("starting \(argv.joined(separator: " "))")
        let launcher: ChildProcess
        do {
            launcher = try await ChildProcess.spawn(
                name: "switch", argv: argv, logger: logger)
        } catch {
            throw .spawnFailed(error)
        }
        let started = ContinuousClock.now
        let deadline = started + readyTimeout
        guard await launcher.waitForExit(timeout: readyTimeout), let exit = launcher.exit else {
            await launcher.terminate()
            throw .notReady(ctlDir: spec.paths.ctlDir, waited: readyTimeout)
        }
        guard exit.status == .exited(0) else { throw .exited(ctlDir: spec.paths.ctlDir, exit: exit) }
        guard
            let identity = await ProcessIdentity.awaitDaemon(
                until: deadline, { pidFile.daemonIdentity(ctlDir: spec.paths.ctlDir) })
        else {
            throw .exited(
                ctlDir: spec.paths.ctlDir,
                exit: ChildExit(
                    status: nil,
                    lastErrorLines: exit.lastErrorLines + [
                        "its daemon wrote no pid file at \(pidFile.path) (it exits when that file exists already)"
                    ]))
        }
        guard let process = try? WatchedProcess(identity) else {
            throw .exited(ctlDir: spec.paths.ctlDir, exit: ChildExit(status: nil, lastErrorLines: exit.lastErrorLines))
        }
        let switchProcess = SwitchProcess(process: process, files: files)
        logger.info(
            "switch up",
            metadata: [
                "pid": "\(process.pid)", "ctl": "\(spec.paths.ctlDir)",
                "ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
        Task { await switchProcess.confirmAnswering(until: deadline, management: management, logger: logger) }
        return switchProcess
    }

    /// Confirms in the background that the switch just started serves its clients:
    /// ``start(files:executables:management:logger:readyTimeout:)`` returns once the daemon runs,
    /// since its sockets listen from before its fork (a launcher that exits 0 has bound them;
    /// vde_switch 2.3.2 exits 255 before its fork when it cannot), so a client that connects
    /// meanwhile waits in the listen backlog, not in vain. A switch that never answers by
    /// `deadline` is killed, and the worker restarts it as one that died ("no port yet" from a
    /// switch just started is not "full": seen under load, a probe timed out 1 s after the
    /// launcher's exit, so it is asked again until then).
    ///
    /// With a management socket (every switch the plugin starts has one) the question goes to it,
    /// on the worker's kept connection: a reply comes from the same loop that serves the ctl
    /// socket. A libvdeplug probe took a port, and a port taken while the worker's other
    /// exchanges with the switch come and go can stay taken for good (``ManagementSession``).
    func confirmAnswering(
        until deadline: ContinuousClock.Instant, management: (any SwitchManagement)?, logger: Logger
    ) async {
        let outcome: String
        if let management {
            var lastError: ManagementError?
            while !process.hasExited {
                do {
                    _ = try await management.usablePorts()
                    logger.debug("switch answers its management socket", metadata: ["pid": "\(pid)"])
                    return
                } catch {
                    lastError = error
                }
                if ContinuousClock.now >= deadline { break }
                try? await Task.sleep(for: .milliseconds(5))
            }
            outcome = lastError.map { "\($0)" } ?? "no reply"
        } else {
            var result: ProbeResult
            repeat {
                result = await SwitchProbe.waitUntilAnswering(
                    ctlDir: spec.paths.ctlDir, timeout: max(deadline - ContinuousClock.now, .milliseconds(50))
                ) { [process] in process.hasExited }
            } while result == .noReply && !process.hasExited && ContinuousClock.now < deadline
            if result == .answers {
                logger.debug("switch answers", metadata: ["pid": "\(pid)"])
                return
            }
            outcome = "\(result)"
        }
        guard !process.hasExited else { return }
        logger.error(
            "vde_switch at \(spec.paths.ctlDir) started but did not answer before its deadline (\(outcome)); killing it to start it again",
            metadata: ["pid": "\(pid)"])
        process.send(SIGKILL)
    }

    /// The switch an earlier worker of this network started and left running, named by the
    /// pid file (see ``SwitchPIDFile/leftover(ctlDir:)``); nil when it is gone meanwhile.
    static func adopt(_ identity: ProcessIdentity, files: SwitchFiles, logger: Logger) -> SwitchProcess? {
        guard let process = try? WatchedProcess(identity) else { return nil }
        logger.info(
            "adopted the running switch", metadata: ["pid": "\(identity.pid)", "ctl": "\(files.spec.paths.ctlDir)"])
        return SwitchProcess(process: process, files: files)
    }

    /// SIGTERM (vde_switch then removes its sockets and pid file), SIGKILL after `grace`;
    /// finally removes whatever of its sockets it left behind (only its own names, only when
    /// nobody listens) and the pid file.
    func stop(logger: Logger) async { await stop(logger: logger, grace: .seconds(2)) }

    func stop(logger: Logger, grace: Duration) async {
        process.send(SIGTERM)
        if !(await process.waitForExit(timeout: grace)) {
            logger.warning("switch did not exit after SIGTERM; killing it", metadata: ["pid": "\(pid)"])
            process.send(SIGKILL)
            _ = await process.waitForExit(timeout: .seconds(2))
        }
        files.removeLeftovers(logger: logger)
        SwitchPIDFile(path: spec.paths.switchPIDFile).remove(ifNaming: process.identity)
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
/// started, so that a new worker finds and adopts the switch its predecessor left running.
/// vde_switch writes its bare pid there (`-p`); the worker then rewrites the file atomically as
/// a ``ProcessIdentity``.
struct SwitchPIDFile: Sendable {
    static let program = "vde_switch"
    let file: PIDFile
    var path: String { file.path }

    init(path: String) { file = PIDFile(path: path) }

    /// What a pid file left by an earlier worker names.
    enum Leftover: Equatable {
        case none
        /// The very switch for `ctlDir`: pid, start time, program and the ctl dir in its argv.
        case adoptable(ProcessIdentity)
        /// A vde_switch with that pid and start time, so one this plugin started, but for
        /// other paths: stopped.
        case otherSwitch(ProcessIdentity)
    }

    func write(_ identity: ProcessIdentity, logger: Logger) {
        do {
            try file.write(identity)
        } catch {
            logger.warning("cannot keep the switch pid file: \(error)")
        }
    }

    func write(pid: pid_t, logger: Logger) {
        guard let identity = ProcessIdentity.of(pid: pid) else { return }
        write(identity, logger: logger)
    }

    func remove() { file.remove() }

    /// Removes the file only while it names `identity` (a new switch's file stays).
    func remove(ifNaming identity: ProcessIdentity) {
        if file.read() == identity { remove() }
    }

    /// The daemon vde_switch wrote into the file (its bare pid, nothing else), when that
    /// process runs vde_switch with `ctlDir` in its argv.
    func daemonIdentity(ctlDir: String) -> ProcessIdentity? {
        guard let text = FileSystem.readFile(path, limit: 64),
            case let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }), words.count == 1,
            let pid = pid_t(words[0]), pid > 1,
            let identity = ProcessIdentity.of(pid: pid), Self.isSwitch(identity, ctlDir: ctlDir)
        else { return nil }
        return identity
    }

    /// True when `identity` runs vde_switch with `-s ctlDir`.
    static func isSwitch(_ identity: ProcessIdentity, ctlDir: String) -> Bool {
        guard identity.isRunning(program: program), let argv = ProcFS.arguments(of: identity.pid) else { return false }
        return zip(argv, argv.dropFirst()).contains { $0 == ("-s", ctlDir) }
    }

    /// What the file names: a switch to adopt, one of ours to stop, or nothing (no file, a
    /// file in another format, a pid that another process has now: nothing is proven).
    ///
    /// A file that still holds vde_switch's bare pid (a worker that died between the launch and
    /// its rewrite) names the switch when that pid runs vde_switch with `-s ctlDir`: no other
    /// process is started with this network's ctl dir.
    func leftover(ctlDir: String) -> Leftover {
        guard let identity = file.runningProcess(program: Self.program) else {
            return daemonIdentity(ctlDir: ctlDir).map(Leftover.adoptable) ?? .none
        }
        return Self.isSwitch(identity, ctlDir: ctlDir) ? .adoptable(identity) : .otherSwitch(identity)
    }

    /// Stops a switch left by an earlier worker (pid, start time and program must all match) and
    /// removes the file. Returns the identity it stopped.
    @discardableResult
    func stopLeftover(logger: Logger) async -> ProcessIdentity? {
        defer { remove() }
        guard let identity = file.runningProcess(program: Self.program) else { return nil }
        logger.info(
            "stopping a switch left behind by an earlier worker",
            metadata: ["pid": "\(identity.pid)", "file": "\(path)"])
        await identity.stop(program: Self.program, grace: .seconds(1))
        return identity
    }
}
