import Glibc
import Shared

/// Keeps one `Codable` value in a JSON file, replaced atomically on every save.
///
/// `save` writes `<file>.tmp-<pid>` next to the file, syncs it, renames it over the file and
/// syncs the directory, so that after a crash the file holds either the old or the new value.
/// Saves of one process must not run concurrently (they share the temporary name): call them
/// from one actor.
struct StateStore<Value: Codable & Sendable>: Sendable {
    let directory: String
    let fileName: String

    init(directory: String, fileName: String = "state.json") {
        self.directory = directory
        self.fileName = fileName
    }

    /// The state file.
    var path: String { (directory.hasSuffix("/") ? String(directory.dropLast()) : directory) + "/" + fileName }

    /// The temporary file a save of this process writes before renaming it over ``path``.
    var temporaryPath: String { "\(path).tmp-\(getpid())" }

    /// The stored value; nil when there is no state file yet.
    func load() throws(StateStoreError) -> Value? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let error = errno
            if error == ENOENT { return nil }
            throw .read(path: path, errno: error)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .read(path: path, errno: errno)
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        do {
            return try JSONCoding.decode(Value.self, from: bytes)
        } catch {
            throw .corrupt(path: path, detail: NetworkOptions.sanitized(JSONCoding.describe(error)))
        }
    }

    /// Replaces the stored value. On failure the previous file is left as it was and no
    /// temporary file remains (except after ``StateStoreError/directorySync(path:errno:)``,
    /// where the new file is already in place).
    func save(_ value: Value) throws(StateStoreError) {
        let bytes: [UInt8]
        do {
            bytes = try JSONCoding.encodePretty(value) + [UInt8(ascii: "\n")]
        } catch {
            throw .encoding(path: path, detail: NetworkOptions.sanitized(JSONCoding.describe(error)))
        }
        try Self.makeDirectory(directory)
        let temporary = temporaryPath
        do throws(StateStoreError) {
            try Self.writeSynced(bytes, to: temporary)
            guard rename(temporary, path) == 0 else { throw .write(path: path, step: "rename", errno: errno) }
        } catch {
            unlink(temporary)
            throw error
        }
        let dirFD = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFD >= 0 else { throw .directorySync(path: path, errno: errno) }
        defer { close(dirFD) }
        guard fsync(dirFD) == 0 else { throw .directorySync(path: path, errno: errno) }
    }

    /// Creates (mode 0600) or truncates `path`, writes `bytes` and syncs them. Removes nothing:
    /// the caller removes the file on failure. Refuses to follow a symbolic link.
    private static func writeSynced(_ bytes: [UInt8], to path: String) throws(StateStoreError) {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .write(path: path, step: "create", errno: errno) }
        var closed = false
        defer { if !closed { close(fd) } }
        // The umask may have cleared bits we want, and an old file may have other bits.
        guard fchmod(fd, 0o600) == 0 else { throw .write(path: path, step: "chmod", errno: errno) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .write(path: path, step: "write", errno: errno)
            }
            offset += n
        }
        guard fsync(fd) == 0 else { throw .write(path: path, step: "fsync", errno: errno) }
        closed = true
        guard close(fd) == 0 else { throw .write(path: path, step: "close", errno: errno) }
    }

    /// Creates `path` and its missing parents with mode 0700; fails if it exists as a non-directory.
    static func makeDirectory(_ path: String) throws(StateStoreError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw .directory(path: prefix, errno: errno)
            }
        }
        var info = stat()
        guard stat(path, &info) == 0 else { throw .directory(path: path, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw .directory(path: path, errno: ENOTDIR) }
    }

    /// A short description of a coding error: what is wrong and where.
}


/// Why the state file could not be read or written, with what to do about it.
enum StateStoreError: ReportableError, Equatable {
    /// The directory could not be created or is not a directory.
    case directory(path: String, errno: Int32)
    /// The value could not be turned into JSON (a bug); nothing was written.
    case encoding(path: String, detail: String)
    /// Writing the new file failed at `step`; the previous file is untouched.
    case write(path: String, step: String, errno: Int32)
    /// The new file replaced the old one, but the directory could not be synced:
    /// the change may not survive a power loss.
    case directorySync(path: String, errno: Int32)
    /// The file exists but could not be read.
    case read(path: String, errno: Int32)
    /// The file exists but does not hold a valid state.
    case corrupt(path: String, detail: String)

    var vdeError: VDEError {
        switch self {
        case .directory(let path, let errno):
            return .system("cannot use the state directory \(path): \(Self.text(errno)); "
                + "create it as a directory writable by vde-supervisor, or configure another state directory")
        case .encoding(let path, let detail):
            return VDEError(.internal, "cannot encode the state for \(path) (\(detail)); the previous state file is kept")
        case .write(let path, let step, let errno):
            return .system("cannot write the state file \(path) (\(step): \(Self.text(errno))); the previous "
                + "state file is kept. Check free space and permissions of its directory")
        case .directorySync(let path, let errno):
            return .system("wrote the state file \(path) but could not sync its directory (\(Self.text(errno))); "
                + "the change may be lost on power failure. Check the filesystem")
        case .read(let path, let errno):
            return .system("cannot read the state file \(path): \(Self.text(errno)); make it a regular file readable by vde-supervisor")
        case .corrupt(let path, let detail):
            return .system("the state file \(path) is not valid (\(detail)). Move it aside "
                + "(mv \(path) \(path).broken) and restart vde-supervisor: it then starts with no "
                + "networks, and vde networks created before must be removed and created again")
        }
    }

    /// The system's text for an errno value.
    static func text(_ errno: Int32) -> String { String(cString: strerror(errno)) }
}
