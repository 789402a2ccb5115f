#if canImport(Glibc)
import Glibc
#endif
import Logging

/// One file per running plug, `<network run dir>/plugs/<endpointID>.pid`, so that a worker that
/// starts after a crash of its predecessor can stop the plugs it left behind.
///
/// Plugs on a switch the worker owns die with the switch when the worker dies; plugs on an
/// external switch would run on, attached to ports nobody manages any more.
struct PlugPIDFiles: Sendable {
    /// `<network run dir>/plugs`.
    var directory: String

    func path(endpointID: String) -> String { "\(directory)/\(endpointID).pid" }

    func write(endpointID: String, pid: pid_t, logger: Logger) {
        do {
            _ = try FileSystem.makeDirectories(directory, mode: 0o755)
        } catch {
            logger.warning("cannot keep plug pid files: \(error)")
            return
        }
        if let code = FileSystem.writeAtomically(path(endpointID: endpointID), contents: "\(pid)\n") {
            logger.warning("cannot write \(path(endpointID: endpointID)): \(SystemCallError.text(code))")
        }
    }

    func remove(endpointID: String) {
        FileSystem.removeFile(path(endpointID: endpointID))
    }

    /// Removes the directory when no pid file is left in it.
    func removeDirectoryIfEmpty() {
        if FileSystem.listDirectory(directory)?.isEmpty == true { FileSystem.removeDirectory(directory) }
    }

    /// Stops every plug listed (when its pid still runs vde_plug2tap) and removes the files.
    /// Returns the pids it stopped.
    @discardableResult
    func stopLeftovers(logger: Logger) async -> [pid_t] {
        var stopped: [pid_t] = []
        for name in FileSystem.listDirectory(directory) ?? [] where name.hasSuffix(".pid") {
            let file = directory + "/" + name
            defer { FileSystem.removeFile(file) }
            guard let text = FileSystem.readFile(file), let pid = pid_t(text.trimmingSpaces()), pid > 1,
                  PlugPIDFiles.runsPlug(pid: pid) else { continue }
            logger.info("stopping a plug left behind by an earlier worker", metadata: ["pid": "\(pid)", "file": "\(file)"])
            kill(pid, SIGTERM)
            let deadline = ContinuousClock.now + .milliseconds(500)
            while PlugPIDFiles.runsPlug(pid: pid), ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
            if PlugPIDFiles.runsPlug(pid: pid) { kill(pid, SIGKILL) }
            stopped.append(pid)
        }
        return stopped
    }

    /// True when `/proc/PID/cmdline` says the process is vde_plug2tap (nsenter execs it, so a plug
    /// started in a container's namespace looks the same). A zombie has an empty cmdline.
    static func runsPlug(pid: pid_t) -> Bool {
        guard let bytes = FileSystem.readBytes("/proc/\(pid)/cmdline", limit: 4096), !bytes.isEmpty else { return false }
        let program = bytes.split(separator: 0, omittingEmptySubsequences: false).first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return FileSystem.lastComponent(of: program) == "vde_plug2tap"
    }
}
