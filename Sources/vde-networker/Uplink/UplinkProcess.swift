import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Why the network's uplink could not be started or attached.
enum UplinkError: ReportableError, CustomStringConvertible {
    case spawnFailed(ChildSpawnError)
    /// The URL pins the uplink to an interface (`/if=NAME`) that this namespace does not have.
    /// vdeplug4 4.0.1 does not refuse an unknown `if=`: it then sends from the interface of the
    /// default route (measured: `vxvde://GROUP/if=nonexist` ran on), so the worker refuses.
    case noInterface(name: String, url: UplinkURL)
    /// libvdeplug reads `vde://PATH[OPTIONS]`: a `[` or `]` in the ctl dir would be taken for options.
    case unusableCtlDir(String)
    /// vde_plug exited while it should have been attaching (no switch, a URL it refused).
    case exitedEarly(pid: pid_t, exit: ChildExit)
    /// vde_plug ran but no switch port showed its pid in time (a full or hung switch).
    case notAttached(pid: pid_t, ctlDir: String, waited: Duration, cause: String?)

    var description: String {
        switch self {
        case .spawnFailed(let error):
            "\(error); is the vdeplug package installed?"
        case .noInterface(let name, let url):
            "the uplink \(url) is pinned to the interface \(name), which does not exist in the worker's network namespace: create it, or fix the uplink's if= option"
        case .unusableCtlDir(let path):
            "the switch's socket_dir \(UntrustedText(path)) contains '[' or ']', which vde_plug reads as options: pick another -o socket_dir for a network with an uplink"
        case .exitedEarly(let pid, let exit):
            "vde_plug (pid \(pid)) \(exit)"
        case .notAttached(let pid, let ctlDir, let waited, let cause):
            "the uplink (pid \(pid)) did not get a port of the switch at \(ctlDir) within \(waited.milliseconds) ms"
                + (cause.map { " (\($0))" } ?? ": the switch may be full or hung")
        }
    }

    var vdeError: VDEError {
        switch self {
        case .noInterface, .unusableCtlDir: .invalid(description)
        default: .system(description)
        }
    }
}

/// The network's uplink: `vde_plug vde://CTLDIR URL`, which joins the switch to the same
/// network on other hosts (libvdeplug 4 does the distributed part). Started like a plug (a child
/// in a process group of its own, stdin on /dev/null, no parent-death signal), so it outlives
/// the worker and the next worker adopts it (``adopt(_:ctlDir:url:)``). It exits by itself when
/// its switch goes (measured: at once, status 1).
///
/// The switch shows vde_plug's own pid on its port (`vdeplug: user=root pid=PID`, measured).
final class UplinkProcess: Sendable {
    static let program = "vde_plug"

    let child: any SupervisedProcess
    var pid: pid_t { child.pid }

    init(child: any SupervisedProcess) { self.child = child }

    /// `vde_plug vde://CTLDIR URL`: the exact argv a leftover must have to be adopted.
    static func argv(ctlDir: String, url: UplinkURL, executables: Executables) -> [String] {
        [executables.vdePlug, "vde://" + ctlDir, url.rawValue]
    }

    static func start(ctlDir: String, url: UplinkURL, executables: Executables, logger: Logger)
        async throws(UplinkError) -> UplinkProcess
    {
        guard !ctlDir.contains("[") && !ctlDir.contains("]") else { throw .unusableCtlDir(ctlDir) }
        if let interface = url.interface, if_nametoindex(interface) == 0 {
            throw .noInterface(name: interface, url: url)
        }
        do {
            let child = try await ChildProcess.spawn(
                name: "uplink", argv: argv(ctlDir: ctlDir, url: url, executables: executables), logger: logger)
            return UplinkProcess(child: child)
        } catch {
            throw .spawnFailed(error)
        }
    }

    /// The uplink an earlier worker started and left running, when `identity` is beyond doubt
    /// that uplink (``isUplink(_:ctlDir:url:)``); nil otherwise.
    static func adopt(_ identity: ProcessIdentity, ctlDir: String, url: UplinkURL) -> UplinkProcess? {
        guard isUplink(identity, ctlDir: ctlDir, url: url), let process = try? WatchedProcess(identity) else {
            return nil
        }
        return UplinkProcess(child: process)
    }

    /// True when `identity` runs vde_plug with exactly `vde://CTLDIR URL` as its arguments, in
    /// this worker's network namespace (a vde_plug elsewhere would send from another host's
    /// interfaces, even if its argv matched).
    static func isUplink(_ identity: ProcessIdentity, ctlDir: String, url: UplinkURL) -> Bool {
        guard identity.isRunning(program: program), let argv = ProcFS.arguments(of: identity.pid),
            argv.count == 3, FileSystem.lastComponent(of: argv[0]) == program,
            argv[1] == "vde://" + ctlDir, argv[2] == url.rawValue,
            let namespace = ProcFS.networkNamespace(of: identity.pid)
        else { return false }
        return namespace == ProcFS.networkNamespace(of: getpid())
    }

    /// Waits until a switch port shows the uplink's pid and returns the port (nil without a
    /// management socket; see ``PortWait``).
    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?, timeout: Duration)
        async throws(UplinkError) -> Int?
    {
        switch await PortWait.until(peerPID: pid, management: management, timeout: timeout, exit: { child.exit }) {
        case .attached(let port): return port
        case .exited(let exit): throw .exitedEarly(pid: pid, exit: exit)
        case .timedOut(let cause): throw .notAttached(pid: pid, ctlDir: ctlDir, waited: timeout, cause: cause)
        }
    }
}
