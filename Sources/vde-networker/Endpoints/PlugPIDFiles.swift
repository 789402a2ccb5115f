import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// One file per running plug, `<network dir>/plugs/<endpointID>.pid` holding `PID STARTTIME`
/// (see ``ProcessIdentity``), so that a worker that starts after a crash of its predecessor can
/// stop the plugs it left behind, and only those.
///
/// Plugs on a switch the worker owns die with the switch when the worker dies; plugs on an
/// external switch would run on, attached to ports nobody manages any more.
struct PlugPIDFiles: Sendable {
    static let program = "vde_plug2tap"

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

    /// Stops every plug listed whose pid, start time and program (vde_plug2tap) all still match,
    /// and removes the files. A file naming a pid that now belongs to another process, or an old
    /// file without a start time, stops nothing. Returns the pids it stopped.
    @discardableResult
    func stopLeftovers(logger: Logger) async -> [pid_t] {
        var stopped: [pid_t] = []
        for name in FileSystem.listDirectory(directory) ?? [] where name.hasSuffix(".pid") {
            let file = PIDFile(path: directory + "/" + name)
            defer { file.remove() }
            guard FileSystem.exists(file.path) else { continue }
            guard let identity = file.read() else {
                logger.warning(
                    "ignoring a plug pid file without a start time (nothing proves whose pid it is)",
                    metadata: ["file": "\(file.path)"])
                continue
            }
            guard identity.isRunning(program: Self.program) else { continue }
            logger.info(
                "stopping a plug left behind by an earlier worker",
                metadata: ["pid": "\(identity.pid)", "file": "\(file.path)"])
            await identity.stop(program: Self.program)
            stopped.append(identity.pid)
        }
        return stopped
    }
}
