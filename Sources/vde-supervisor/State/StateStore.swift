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
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.read(path, limit: .max)
        } catch {
            if error.errno == ENOENT { return nil }
            throw .read(path: path, errno: error.errno)
        }
        do {
            return try JSONCoding.decode(Value.self, from: bytes, userInfo: userInfo)
        } catch {
            let previous = FileSystem.isRegularFile(previousPath) ? previousPath : nil
            throw .corrupt(
                path: path, detail: UntrustedText(JSONCoding.describe(error)).description, previous: previous)
        }
    }

    /// Replaces the stored value; the value it replaces becomes ``previousPath``. On failure the
    /// file holds the old value and no temporary file remains, so a caller that keeps its old
    /// value in memory agrees with the file. (A failed directory sync puts the old file back:
    /// the rename may not be durable, and a reply must not confirm what a power loss could undo.)
    /// Returns the size of the file written.
    @discardableResult
    func save(_ value: Value) throws(StateStoreError) -> Int {
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
        return bytes.count
    }

    /// Makes the current file (if it is a regular file) the previous generation, atomically:
    /// a hard link to it renamed over ``previousPath``. Returns whether there was one.
    private func keepPreviousGeneration() throws(StateStoreError) -> Bool {
        guard FileSystem.isRegularFile(path) else { return false }
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
        do {
            try FileSystem.write(bytes, to: path, mode: 0o600, options: [.noFollow, .sync])
        } catch {
            throw .write(path: path, step: error.call == "open" ? "create" : error.call, errno: error.errno)
        }
    }

    /// Creates `path` and its missing parents with mode 0700; fails if it exists as a non-directory.
    static func makeDirectory(_ path: String) throws(StateStoreError) {
        do {
            try FileSystem.makeDirectories(path, mode: 0o700)
        } catch {
            throw .directory(path: error.subject ?? path, errno: error.errno)
        }
    }
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
    /// Appending to the state journal (or making it ready) failed at `step`; the change was
    /// refused. `undone`: the journal is as before; else the next change rewrites the snapshot first.
    case journalWrite(path: String, step: String, errno: Int32, undone: Bool)
    /// The sync of records already confirmed failed (``JournaledStateStore/syncDeferred()``).
    case deferredSync(path: String, errno: Int32)
    /// The journal is damaged before its end (not a torn last write), at `line` / byte `offset`
    /// when known: its records from there on cannot be trusted.
    case journalCorrupt(path: String, line: Int?, offset: Int?, detail: String)
    /// The snapshot includes records up to `covered` but the journal's next record is `first`:
    /// records in between are missing (a snapshot replaced by an older copy).
    case journalGap(path: String, snapshot: String, covered: UInt64, first: UInt64)

    var vdeError: VDEError {
        switch self {
        case .directory(let path, let errno):
            return .system(
                "cannot use the state directory \(path): \(Self.text(errno)); "
                    + "create it as a directory writable by vde-supervisor, or configure another state directory")
        case .encoding(let path, let detail):
            return VDEError(
                .internal, "cannot encode the state for \(path) (\(detail)); the previous state file is kept")
        case .write(let path, let step, let errno):
            return .system(
                "cannot write the state file \(path) (\(step): \(Self.text(errno))); the previous "
                    + "state file is kept. Check free space and permissions of its directory")
        case .directorySync(let path, let errno, let restored):
            return .system(
                "cannot sync the directory of the state file \(path) (\(Self.text(errno))); the change "
                    + (restored
                        ? "was undone and the previous state file is back. "
                        : "was refused, but the previous state file could not be put back. ")
                    + "Check the filesystem")
        case .read(let path, let errno):
            return .system(
                "cannot read the state file \(path): \(Self.text(errno)); make it a regular file readable by vde-supervisor"
            )
        case .corrupt(let path, let detail, let previous?):
            return .system(
                "the state file \(path) is not valid (\(detail)). Restore the previous generation, "
                    + "which is one change older: mv \(path) \(path).broken && cp -p \(previous) \(path), then "
                    + "restart vde-supervisor (a network or container changed by that last change may need to be "
                    + "created again). If \(previous) is not valid either, move both aside: vde-supervisor then starts "
                    + "with no networks, and vde networks created before must be removed and created again")
        case .journalWrite(let path, let step, let errno, let undone):
            return .system(
                "cannot append to the state journal \(path) (\(step): \(Self.text(errno))); the change was refused"
                    + (undone
                        ? " and the stored state is as before. "
                        : ", but the journal could not be cut back; the next change rewrites the state file first. ")
                    + "Check free space, permissions and the filesystem of the state directory")
        case .deferredSync(let path, let errno):
            return .system(
                "cannot sync the state journal \(path) (fdatasync: \(Self.text(errno))) after changes it had already "
                    + "confirmed: they are in the file and in memory, and the next change rewrites the state file first; "
                    + "until then a power cut could lose them. Check the disk and the filesystem of the state directory"
            )
        case .journalCorrupt(let path, let line, let offset, let detail):
            let whereText = line.map { " at line \($0)" } ?? ""
            let keep =
                offset.map {
                    "keep what precedes the damage: mv \(path) \(path).broken && head -c \($0) \(path).broken > \(path), "
                        + "then restart vde-supervisor (changes recorded after it are lost: a network or container "
                        + "changed since may need to be created again)"
                }
                ?? ("move it aside (mv \(path) \(path).broken) and restart vde-supervisor: it starts from the state "
                    + "file alone, and networks or containers changed since it was written may need to be created again")
            return .system(
                "the state journal \(path) is damaged\(whereText) (\(detail)); this is not a write cut short by a "
                    + "crash, which only affects the last record. To start again, " + keep)
        case .journalGap(let path, let snapshot, let covered, let first):
            return .system(
                "the state file \(snapshot) includes journal records up to \(covered), but the state journal "
                    + "\(path) continues at record \(first) (and \(path).1 does not hold the ones between): was the "
                    + "state file replaced by an older copy? Put back the state file that matches, or move the "
                    + "journal aside (mv \(path) \(path).broken) and restart vde-supervisor: changes after record "
                    + "\(covered) are then lost, and networks or containers changed since may need to be created again")
        case .corrupt(let path, let detail, nil):
            return .system(
                "the state file \(path) is not valid (\(detail)) and there is no previous generation "
                    + "(\(path).1). Move it aside (mv \(path) \(path).broken) and restart vde-supervisor: it then "
                    + "starts with no networks, and vde networks created before must be removed and created again")
        }
    }

    /// The system's text for an errno value.
    static func text(_ errno: Int32) -> String { SystemCallError.text(errno) }
}
