import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// `<network dir>/uplink.pid`: the identity (pid and start time) of the uplink the worker
/// started, written as soon as vde_plug runs, so that a worker killed at any moment leaves an
/// uplink the next one can find, adopt (``UplinkProcess/isUplink(_:ctlDir:url:)``) or stop.
struct UplinkPIDFile: Sendable {
    let file: PIDFile
    var path: String { file.path }

    init(path: String) { file = PIDFile(path: path) }

    func write(pid: pid_t, logger: Logger) {
        guard let identity = ProcessIdentity.of(pid: pid) else {
            logger.warning("cannot write the uplink's pid file: pid \(pid) no longer runs")
            return
        }
        do {
            try file.write(identity)
        } catch {
            logger.warning("cannot keep the uplink's pid file: \(error)")
        }
    }

    func remove() { file.remove() }

    /// What the file names.
    enum Leftover: Equatable {
        case none
        /// vde_plug with exactly this network's argv, in this namespace: the uplink to adopt.
        case adoptable(ProcessIdentity)
        /// A vde_plug with the pid and start time written here, so one this plugin started, but
        /// with other arguments (another uplink URL) or elsewhere: to stop.
        case otherUplink(ProcessIdentity)
    }

    /// What the file names now; `url` nil: the network has no uplink (any vde_plug it names is
    /// one to stop). A file naming a pid that another program has now proves nothing (`none`).
    func leftover(ctlDir: String, url: UplinkURL?) -> Leftover {
        guard let identity = file.runningProcess(program: UplinkProcess.program) else { return .none }
        guard let url, UplinkProcess.isUplink(identity, ctlDir: ctlDir, url: url) else {
            return .otherUplink(identity)
        }
        return .adoptable(identity)
    }
}
