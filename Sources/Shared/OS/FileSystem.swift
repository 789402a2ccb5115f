import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Files and directories, on plain libc and swift-system (the worker stays free of Foundation):
/// the one place both executables read a whole file, write one (atomically, synced), make
/// directories and list them.
public enum FileSystem {
    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// True only on evidence that nothing is at `path` (links followed): ENOENT. A path that
    /// could not be looked at (EACCES, ELOOP, ...) is not missing.
    public static func isMissing(_ path: String) -> Bool {
        access(path, F_OK) != 0 && errno == ENOENT
    }

    /// The type bits (`S_IFMT`) of `path` itself (symlinks are not followed), or nil when it does not exist.
    public static func fileType(_ path: String) -> mode_t? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    /// A file's device and inode (`stat`, links followed): equal for two paths of one file.
    public struct FileID: Equatable, Hashable, Sendable {
        public var device: UInt64
        public var inode: UInt64
    }

    /// The device and inode of `path` (following links); nil when it cannot be stat'ed.
    public static func fileID(_ path: String) -> FileID? {
        // open + fstat: Swift takes `stat(path, &info)` for the struct's initialiser (and has no O_PATH).
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return FileID(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    public static func isDirectory(_ path: String) -> Bool { fileType(path) == S_IFDIR }

    public static func isRegularFile(_ path: String) -> Bool { fileType(path) == S_IFREG }

    public static func isSocket(_ path: String) -> Bool { fileType(path) == S_IFSOCK }

    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 && !isDirectory(path) }

    // MARK: Reading

    /// Reads a small file (sysfs, procfs, pid files) whole, as text; nil when it cannot be read.
    public static func readFile(_ path: String, limit: Int = 1 << 16) -> String? {
        guard let bytes = readBytes(path, limit: limit) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads a small file whole; nil when it cannot be read.
    public static func readBytes(_ path: String, limit: Int = 1 << 16) -> [UInt8]? {
        try? read(path, limit: limit)
    }

    /// Reads `path` whole, at most `limit` bytes (what lies beyond is not read: check the count
    /// against the limit where a longer file is an error).
    public static func read(_ path: String, limit: Int = 1 << 16) throws(SystemCallError) -> [UInt8] {
        let fd = try SystemCallError.wrapping("open", path) {
            try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        }
        defer { try? fd.close() }
        return try read(fd, limit: limit, subject: path)
    }

    /// Reads `fd` from its current offset to its end, at most `limit` bytes.
    ///
    /// The read buffer starts at one page and doubles (to 64 kB) only while reads fill it: most
    /// files read here are a line (a pid file, a MAC address, /proc/PID/stat), for which a
    /// zero-filled 64 kB buffer wrote 16 pages (A/B at 100 networks × 2: 1037 → 1033 kB per
    /// network, most of it given back by the trim after each request anyway).
    public static func read(_ fd: FileDescriptor, limit: Int, subject: String? = nil) throws(SystemCallError) -> [UInt8]
    {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: min(max(limit, 1), 4096))
        while result.count < limit {
            if result.count >= chunk.count, chunk.count < 64 * 1024 {
                chunk = [UInt8](repeating: 0, count: min(chunk.count * 2, 64 * 1024, limit))
            }
            let wanted = min(chunk.count, limit - result.count)
            let n = try SystemCallError.wrapping("read", subject) {
                try chunk.withUnsafeMutableBytes {
                    try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<wanted]))
                }
            }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
        }
        return result
    }

    /// Where a symbolic link points; nil when `path` is not one or cannot be read.
    public static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Writing

    /// How ``write(_:to:mode:options:)`` creates and finishes a file.
    public struct WriteOptions: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// Refuse to write through a symbolic link at the path.
        public static let noFollow = WriteOptions(rawValue: 1)
        /// `fsync` the file before closing it (and, for an atomic write, its directory after the rename).
        public static let sync = WriteOptions(rawValue: 2)
    }

    /// Creates or truncates `path` with `mode` (set exactly, whatever the umask or an old file's
    /// bits), writes all of `bytes` and closes it. Removes nothing on failure.
    public static func write(
        _ bytes: some Collection<UInt8>, to path: String, mode: mode_t = 0o644,
        options: WriteOptions = []
    ) throws(SystemCallError) {
        var openOptions: FileDescriptor.OpenOptions = [.create, .truncate, .closeOnExec]
        if options.contains(.noFollow) { openOptions.insert(.noFollow) }
        let fd = try SystemCallError.wrapping("open", path) {
            try FileDescriptor.open(
                FilePath(path), .writeOnly, options: openOptions, permissions: FilePermissions(rawValue: CModeT(mode)))
        }
        var closed = false
        defer { if !closed { try? fd.close() } }
        guard fchmod(fd.rawValue, mode) == 0 else { throw .last("chmod", path) }
        try writeAll(bytes, to: fd, subject: path)
        if options.contains(.sync), fsync(fd.rawValue) != 0 { throw .last("fsync", path) }
        closed = true
        try SystemCallError.wrapping("close", path) { try fd.close() }
    }

    /// Writes all of `bytes` to `fd` (retrying short writes and EINTR).
    public static func writeAll(_ bytes: some Collection<UInt8>, to fd: FileDescriptor, subject: String? = nil)
        throws(SystemCallError)
    {
        _ = try SystemCallError.wrapping("write", subject) { try fd.writeAll(bytes) }
    }

    /// Writes all of `bytes` to the raw descriptor `fd` (a pipe, stderr).
    public static func writeAll(_ bytes: some Collection<UInt8>, to fd: Int32, subject: String? = nil)
        throws(SystemCallError)
    {
        try writeAll(bytes, to: FileDescriptor(rawValue: fd), subject: subject)
    }

    /// Replaces `path` by a file holding `bytes`, through a temporary file in the same directory
    /// and `rename`, so readers see the old file or the new one, never half of one. With `.sync`
    /// the file and then its directory are synced. The temporary file never stays behind.
    public static func writeAtomically(
        _ path: String, bytes: some Collection<UInt8>, mode: mode_t = 0o644,
        options: WriteOptions = []
    ) throws(SystemCallError) {
        let temporary = path + temporarySuffix
        do throws(SystemCallError) {
            try write(bytes, to: temporary, mode: mode, options: options.union(.noFollow))
            guard rename(temporary, path) == 0 else { throw SystemCallError.last("rename", path) }
        } catch {
            unlink(temporary)
            throw error
        }
        if options.contains(.sync) { try syncDirectory(parent(of: path)) }
    }

    /// The suffix of the temporary file of ``writeAtomically(_:bytes:mode:options:)``: a
    /// directory scan skips such names (a crash may leave one).
    public static let temporarySuffix = ".tmp"

    /// ``writeAtomically(_:bytes:mode:options:)`` for text.
    public static func writeAtomically(
        _ path: String, contents: String, mode: mode_t = 0o644,
        options: WriteOptions = []
    ) throws(SystemCallError) {
        try writeAtomically(path, bytes: Array(contents.utf8), mode: mode, options: options)
    }

    /// Syncs a directory, so that renames and links in it survive a power loss.
    public static func syncDirectory(_ path: String) throws(SystemCallError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .last("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .last("fsync", path) }
    }

    // MARK: Directories

    /// Names in a directory, without `.` and `..`; nil when it cannot be opened.
    public static func listDirectory(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        return names(in: dir)
    }

    /// The names an open directory stream holds, from its start, without `.` and `..`.
    public static func names(in dir: OpaquePointer) -> [String] {
        rewinddir(dir)
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Creates `path` and any missing parents with `mode` (set exactly on each directory it
    /// creates: `mkdir` obeys the umask, and the mode is what other users need, e.g. 0755).
    /// Returns the directories it created, outermost first. Fails with ENOTDIR when `path` or a
    /// parent exists as something else; directories that exist are left as they are.
    @discardableResult
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SystemCallError) -> [String] {
        if isDirectory(path) { return [] }
        var missing: [String] = []
        var current = path
        while !current.isEmpty, current != "/", current != ".", !isDirectory(current) {
            missing.append(current)
            current = parent(of: current)
        }
        var created: [String] = []
        for directory in missing.reversed() {
            if mkdir(directory, mode) == 0 {
                chmod(directory, mode)
                created.append(directory)
            } else if errno != EEXIST {
                throw .last("mkdir", directory)
            } else if !isDirectory(directory) {
                throw SystemCallError(call: "mkdir", subject: directory, errno: ENOTDIR)
            }
        }
        return created
    }

    @discardableResult
    public static func removeFile(_ path: String) -> Bool { unlink(path) == 0 }

    @discardableResult
    public static func removeDirectory(_ path: String) -> Bool { rmdir(path) == 0 }

    /// Removes `path` if it is an empty directory; true when it did.
    @discardableResult
    public static func removeIfEmpty(_ path: String) -> Bool {
        listDirectory(path)?.isEmpty == true && removeDirectory(path)
    }

    // MARK: Paths

    /// The directory part of a path (`/a/b` -> `/a`, `/a` -> `/`, `a` -> `.`).
    public static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        if slash == trimmed.startIndex { return "/" }
        return String(trimmed[..<slash])
    }

    public static func lastComponent(of path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}
