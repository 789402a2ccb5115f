import Glibc
import Shared

/// Keeps one `Codable` value in a JSON file, replaced atomically on every save, and the value
/// before it in `<file>.1`.
///
/// `save` writes `<file>.tmp-<pid>` next to the file and syncs it, makes the current file the
/// previous generation (a hard link renamed over `<file>.1`, so `<file>.1` is always a whole
/// file), renames the new file over the file and syncs the directory. After a crash the file
/// holds either the old or the new value; if it is ever damaged, `<file>.1` is one change older.
/// Saves of one process must not run concurrently (they share the temporary names): call them
/// from one actor.
struct StateStore<Value: Codable & Sendable>: Sendable {
    let directory: String
    let fileName: String
    /// Syncs the directory (`fsync` of its descriptor; tests inject failures). Returns 0 or sets errno.
    var syncDirectory: @Sendable (_ fd: Int32) -> Int32 = { fsync($0) }

    init(directory: String, fileName: String = "state.json") {
        self.directory = directory
        self.fileName = fileName
    }

    /// The state file.
    var path: String { (directory.hasSuffix("/") ? String(directory.dropLast()) : directory) + "/" + fileName }

    /// The previous generation: what ``path`` held before the last successful save.
    var previousPath: String { path + ".1" }

    /// The temporary file a save of this process writes before renaming it over ``path``.
    var temporaryPath: String { "\(path).tmp-\(getpid())" }

    /// The temporary link a save renames over ``previousPath``.
    private var previousTemporaryPath: String { "\(previousPath).tmp-\(getpid())" }

    /// The stored value; nil when there is no state file yet. `userInfo` goes to the decoder.
    func load(userInfo: [CodingUserInfoKey: any Sendable] = [:]) throws(StateStoreError) -> Value? {
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
            return try JSONCoding.decode(Value.self, from: bytes, userInfo: userInfo)
        } catch {
            var info = stat()
            let previous = lstat(previousPath, &info) == 0 && info.st_mode & S_IFMT == S_IFREG ? previousPath : nil
            throw .corrupt(path: path, detail: UntrustedText(JSONCoding.describe(error)).description, previous: previous)
        }
    }

    /// Replaces the stored value; the value it replaces becomes ``previousPath``. On failure the
    /// file holds the old value and no temporary file remains, so a caller that keeps its old
    /// value in memory agrees with the file. (A failed directory sync puts the old file back:
    /// the rename may not be durable, and a reply must not confirm what a power loss could undo.)
    func save(_ value: Value) throws(StateStoreError) {
        let bytes: [UInt8]
        do {
            bytes = try JSONCoding.encodePretty(value) + [UInt8(ascii: "\n")]
        } catch {
            throw .encoding(path: path, detail: UntrustedText(JSONCoding.describe(error)).description)
        }
        try Self.makeDirectory(directory)
        let temporary = temporaryPath
        let hadPrevious: Bool
        do throws(StateStoreError) {
            try Self.writeSynced(bytes, to: temporary)
            hadPrevious = try keepPreviousGeneration()
            guard rename(temporary, path) == 0 else { throw .write(path: path, step: "rename", errno: errno) }
        } catch {
            unlink(temporary)
            throw error
        }
        let dirFD = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let synced = dirFD >= 0 && syncDirectory(dirFD) == 0
        let syncErrno = errno
        if dirFD >= 0 { close(dirFD) }
        guard synced else {
            throw .directorySync(path: path, errno: syncErrno, restored: restorePrevious(hadPrevious: hadPrevious))
        }
    }

    /// Makes the current file (if it is a regular file) the previous generation, atomically:
    /// a hard link to it renamed over ``previousPath``. Returns whether there was one.
    private func keepPreviousGeneration() throws(StateStoreError) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return false }
        if let (step, error) = Self.linkAtomically(path, to: previousPath, via: previousTemporaryPath) {
            throw .write(path: previousPath, step: step, errno: error)
        }
        return true
    }

    /// Makes `target` another name of `source`'s file, atomically: a hard link at `temporary`
    /// renamed over `target`. Returns the failed step and its errno (the link is then removed).
    private static func linkAtomically(_ source: String, to target: String, via temporary: String) -> (String, Int32)? {
        unlink(temporary)
        guard Glibc.link(source, temporary) == 0 else { return ("link", errno) }
        guard rename(temporary, target) == 0 else {
            let error = errno
            unlink(temporary)
            return ("rename", error)
        }
        return nil
    }

    /// After a failed directory sync: puts the file the save replaced back (from ``previousPath``,
    /// which keeps it), or removes the new file when there was none. True when that worked.
    private func restorePrevious(hadPrevious: Bool) -> Bool {
        guard hadPrevious else { return unlink(path) == 0 }
        return Self.linkAtomically(previousPath, to: path, via: temporaryPath) == nil
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
    /// The directory could not be synced after the rename, so the change might not survive a
    /// power loss; the old file was put back (`restored`), and the change is refused.
    case directorySync(path: String, errno: Int32, restored: Bool)
    /// The file exists but could not be read.
    case read(path: String, errno: Int32)
    /// The file exists but does not hold a valid state; `previous` is the previous generation, if any.
    case corrupt(path: String, detail: String, previous: String?)

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
        case .directorySync(let path, let errno, let restored):
            return .system("cannot sync the directory of the state file \(path) (\(Self.text(errno))); the change "
                + (restored ? "was undone and the previous state file is back. " : "was refused, but the previous state file could not be put back. ")
                + "Check the filesystem")
        case .read(let path, let errno):
            return .system("cannot read the state file \(path): \(Self.text(errno)); make it a regular file readable by vde-supervisor")
        case .corrupt(let path, let detail, let previous?):
            return .system("the state file \(path) is not valid (\(detail)). Restore the previous generation, "
                + "which is one change older: mv \(path) \(path).broken && cp -p \(previous) \(path), then "
                + "restart vde-supervisor (a network or container changed by that last change may need to be "
                + "created again). If \(previous) is not valid either, move both aside: vde-supervisor then starts "
                + "with no networks, and vde networks created before must be removed and created again")
        case .corrupt(let path, let detail, nil):
            return .system("the state file \(path) is not valid (\(detail)) and there is no previous generation "
                + "(\(path).1). Move it aside (mv \(path) \(path).broken) and restart vde-supervisor: it then "
                + "starts with no networks, and vde networks created before must be removed and created again")
        }
    }

    /// The system's text for an errno value.
    static func text(_ errno: Int32) -> String { String(cString: strerror(errno)) }
}
