#if canImport(Glibc)
    import Glibc
#endif

/// A file holding one ``ProcessIdentity`` (`PID STARTTIME`), written atomically, so that a later
/// process can find, and stop or adopt, the process it names, and only that one.
public struct PIDFile: Sendable, Equatable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Writes `identity`, making the directory (mode 0755) when missing.
    public func write(_ identity: ProcessIdentity) throws(SystemCallError) {
        try FileSystem.makeDirectories(FileSystem.parent(of: path), mode: 0o755)
        try FileSystem.writeAtomically(path, contents: identity.fileText)
    }

    /// The identity the file holds; nil when there is no file or it does not hold one.
    public func read() -> ProcessIdentity? {
        FileSystem.readFile(path, limit: 256).flatMap(ProcessIdentity.init(fileText:))
    }

    /// The process the file names, when that very process still runs `program`.
    public func runningProcess(program: String) -> ProcessIdentity? {
        guard let identity = read(), identity.isRunning(program: program) else { return nil }
        return identity
    }

    public func remove() { FileSystem.removeFile(path) }
}
