import Shared
#if canImport(Glibc)
import Glibc
#endif
import Logging

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
            _ = try FileSystem.makeDirectories(directory, mode: 0o755)
        } catch {
            logger.warning("cannot keep plug pid files: \(error)")
            return
        }
        if let code = FileSystem.writeAtomically(path(endpointID: endpointID), contents: identity.fileText) {
            logger.warning("cannot write \(path(endpointID: endpointID)): \(SystemCallError.text(code))")
        }
    }

    func remove(endpointID: EndpointID) {
        FileSystem.removeFile(path(endpointID: endpointID))
    }

    /// Removes the directory when no pid file is left in it.
    func removeDirectoryIfEmpty() {
        if FileSystem.listDirectory(directory)?.isEmpty == true { FileSystem.removeDirectory(directory) }
    }

    /// Stops every plug listed whose pid, start time and program (vde_plug2tap) all still match,
    /// and removes the files. A file naming a pid that now belongs to another process, or an old
    /// file without a start time, stops nothing. Returns the pids it stopped.
    @discardableResult
    func stopLeftovers(logger: Logger) async -> [pid_t] {
        var stopped: [pid_t] = []
        for name in FileSystem.listDirectory(directory) ?? [] where name.hasSuffix(".pid") {
            let file = directory + "/" + name
            defer { FileSystem.removeFile(file) }
            guard let text = FileSystem.readFile(file) else { continue }
            guard let identity = ProcessIdentity(fileText: text) else {
                logger.warning("ignoring a plug pid file without a start time (nothing proves whose pid it is)", metadata: ["file": "\(file)"])
                continue
            }
            guard identity.isRunning(program: Self.program) else { continue }
            logger.info("stopping a plug left behind by an earlier worker", metadata: ["pid": "\(identity.pid)", "file": "\(file)"])
            await identity.stop(program: Self.program)
            stopped.append(identity.pid)
        }
        return stopped
    }
}
