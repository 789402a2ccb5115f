#if canImport(Glibc)
import Glibc
#endif
import Logging
import Shared

/// Why the network's switch could not be started or used.
enum SwitchError: ReportableError, CustomStringConvertible {
    case invalidSpec(String)
    /// `own` mode, but a switch already answers at the ctl dir.
    case alreadyRunning(ctlDir: String)
    /// `own` mode, but the management socket belongs to a live switch.
    case managementSocketInUse(path: String)
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
            "the management socket \(path) belongs to another running switch: pick another -o management_socket"
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
        case .alreadyRunning, .managementSocketInUse: .conflict(description)
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
    let spec: SwitchSpec

    var pid: pid_t { child.pid }

    private init(child: ChildProcess, spec: SwitchSpec) {
        self.child = child
        self.spec = spec
    }

    /// `vde_switch -s CTL -M MGMT -n PORTS+1 [-g GROUP -m 0660]`: `-n N` gives N-1 ports to clients,
    /// since port 0 is never allocated.
    static func argv(spec: SwitchSpec, executables: Executables) -> [String] {
        var argv = [executables.vdeSwitch, "-s", spec.ctlDir]
        if let management = spec.managementSocket { argv += ["-M", management] }
        argv += ["-n", String(spec.numPorts + 1)]
        if let group = spec.group { argv += ["-g", group, "-m", "0660"] }
        return argv
    }

    /// Starts the switch and returns once a libvdeplug probe gets a port from it.
    static func start(spec: SwitchSpec, executables: Executables, logger: Logger,
                      readyTimeout: Duration = .seconds(5)) async throws(SwitchError) -> SwitchProcess {
        let argv = argv(spec: spec, executables: executables)
        logger.debug("starting \(argv.joined(separator: " "))")
        let child: ChildProcess
        do {
            child = try await ChildProcess.spawn(name: "switch", argv: argv, holdStandardInput: true, logger: logger)
        } catch {
            throw .spawnFailed(error)
        }
        let started = ContinuousClock.now
        let result = await SwitchProbe.waitUntilAnswering(ctlDir: spec.ctlDir, timeout: readyTimeout) { child.hasExited }
        if result == .answers, !child.hasExited {
            logger.info("switch up", metadata: ["pid": "\(child.pid)", "ctl": "\(spec.ctlDir)",
                                                "ms": "\((ContinuousClock.now - started).milliseconds)"])
            return SwitchProcess(child: child, spec: spec)
        }
        // Give a dying switch a moment to say why.
        _ = await child.waitForExit(timeout: .milliseconds(200))
        if let exit = child.exit { throw .exited(ctlDir: spec.ctlDir, exit: exit) }
        let process = SwitchProcess(child: child, spec: spec)
        await process.stop(logger: logger)
        throw .notReady(ctlDir: spec.ctlDir, waited: readyTimeout)
    }

    /// Closes the switch's stdin, waits up to `grace` for it to exit, then kills it; finally removes
    /// whatever of its ctl dir and management socket it left behind.
    func stop(logger: Logger, grace: Duration = .seconds(2)) async {
        await child.closeStandardInput()
        if !(await child.waitForExit(timeout: grace)) {
            logger.warning("switch did not exit after its stdin was closed; killing it", metadata: ["pid": "\(pid)"])
            child.send(SIGKILL)
            _ = await child.waitForExit(timeout: .seconds(2))
        }
        SwitchProcess.removeLeftovers(spec: spec, logger: logger)
    }

    /// Removes the sockets in the ctl dir, the ctl dir if it is then empty, and the management
    /// socket. Only sockets are removed: a ctl dir that holds anything else is left alone.
    static func removeLeftovers(spec: SwitchSpec, logger: Logger) {
        removeStaleSockets(ctlDir: spec.ctlDir)
        if FileSystem.isDirectory(spec.ctlDir) {
            if FileSystem.removeDirectory(spec.ctlDir) {
                logger.debug("removed the ctl dir \(spec.ctlDir) the switch left behind")
            } else {
                logger.warning("cannot remove the ctl dir \(spec.ctlDir): \(SystemCallError.text(errno))")
            }
        }
        if let management = spec.managementSocket, FileSystem.isSocket(management) {
            FileSystem.removeFile(management)
        }
    }

    /// Removes socket files in `ctlDir` (a killed switch leaves its `ctl` and per-port sockets).
    static func removeStaleSockets(ctlDir: String) {
        for name in FileSystem.listDirectory(ctlDir) ?? [] where FileSystem.isSocket(ctlDir + "/" + name) {
            FileSystem.removeFile(ctlDir + "/" + name)
        }
    }
}
