import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// One file per running plug (vde_plug2tap, or the wirefilter daemon of an impaired
/// endpoint), `<network dir>/plugs/<endpointID>.pid` holding `PID STARTTIME` (see ``ProcessIdentity``), so that a worker that starts after its predecessor died adopts
/// the plugs of the endpoints it restores, stops the others it left behind, and touches no
/// other process.
///
/// Plugs outlive the worker that started them (the data path outlives its managers); they
/// exit only with their switch.
struct PlugPIDFiles: Sendable {
    /// The programs a plug runs: vde_plug2tap, or wirefilter for an impaired endpoint.
    static let programs = [PlugKind.plug2tap.program, PlugKind.wirefilter.program]

    /// `<network dir>/plugs`.
    var directory: String

    func path(endpointID: EndpointID) -> String { "\(directory)/\(endpointID).pid" }

    func write(endpointID: EndpointID, pid: pid_t, logger: Logger) {
        guard let identity = ProcessIdentity.of(pid: pid) else {
            logger.warning("cannot write the pid file of plug \(pid): it no longer runs")
            return
        }
        do {
            try PIDFile(path: path(endpointID: endpointID)).write(identity)
        } catch {
            logger.warning("cannot keep the plug's pid file: \(error)")
        }
    }

    func remove(endpointID: EndpointID) {
        PIDFile(path: path(endpointID: endpointID)).remove()
    }

    /// Removes the directory when no pid file is left in it.
    func removeDirectoryIfEmpty() {
        FileSystem.removeIfEmpty(directory)
    }

    /// What ``takeOver(restoring:ctlDir:logger:adopt:)`` found.
    struct Leftovers {
        /// The running plugs of endpoints being restored, by endpoint.
        var adopted: [EndpointID: any RunningPlug] = [:]
        /// The pids of plugs it stopped.
        var stopped: [pid_t] = []
    }

    /// Goes through the pid files an earlier worker left: the plug of an endpoint in
    /// `restoring` that `adopt` recognises is adopted and keeps its file; every other plug
    /// whose pid, start time and program (vde_plug2tap or wirefilter) all still match is stopped; a file
    /// naming a pid that now belongs to another process, or an old file without a start time,
    /// stops nothing. Files of plugs not adopted are removed.
    func takeOver(
        restoring: [EndpointSpec], logger: Logger,
        adopt: (ProcessIdentity, EndpointSpec) -> (any RunningPlug)?
    ) async -> Leftovers {
        var found = Leftovers()
        let restored = Dictionary(
            restoring.map { ($0.endpointID.rawValue, $0) }, uniquingKeysWith: { first, _ in first })
        for name in (FileSystem.listDirectory(directory) ?? []).sorted() where name.hasSuffix(".pid") {
            let file = PIDFile(path: directory + "/" + name)
            guard FileSystem.exists(file.path) else { continue }
            guard let identity = file.read() else {
                logger.warning(
                    "ignoring a plug pid file without a start time (nothing proves whose pid it is)",
                    metadata: ["file": "\(file.path)"])
                file.remove()
                continue
            }
            if let endpoint = restored[String(name.dropLast(4))], let plug = adopt(identity, endpoint) {
                logger.info(
                    "adopted the running plug",
                    metadata: ["endpoint": "\(endpoint.endpointID)", "pid": "\(identity.pid)"])
                found.adopted[endpoint.endpointID] = plug
                continue
            }
            defer { file.remove() }
            guard let program = Self.programs.first(where: { identity.isRunning(program: $0) }) else { continue }
            logger.info(
                "stopping a plug left behind by an earlier worker",
                metadata: ["pid": "\(identity.pid)", "file": "\(file.path)", "program": "\(program)"])
            // A wirefilter removes its own pid file and socket on SIGTERM.
            await identity.stop(program: program)
            found.stopped.append(identity.pid)
        }
        return found
    }
}
