#if canImport(Glibc)
import Glibc
#endif

/// The few file system calls the worker needs, on plain libc (the worker stays free of Foundation).
enum FileSystem {
    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// The type bits (`S_IFMT`) of `path` itself (symlinks are not followed), or nil when it does not exist.
    static func fileType(_ path: String) -> mode_t? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    static func isDirectory(_ path: String) -> Bool { fileType(path) == S_IFDIR }

    static func isSocket(_ path: String) -> Bool { fileType(path) == S_IFSOCK }

    /// Reads a small file (sysfs, procfs, pid files) whole; nil when it cannot be read.
    static func readFile(_ path: String, limit: Int = 1 << 16) -> String? {
        guard let bytes = readBytes(path, limit: limit) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func readBytes(_ path: String, limit: Int = 1 << 16) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while result.count < limit {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
        }
        return result
    }

    /// Writes `contents` to `path` through a temporary file and `rename`, so readers never see half a file.
    static func writeAtomically(_ path: String, contents: String, mode: mode_t = 0o644) -> Int32? {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { return errno }
        var bytes = Array(contents.utf8)
        var offset = 0
        let failure: Int32? = bytes.withUnsafeMutableBytes { buffer in
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += n
            }
            return nil
        }
        close(fd)
        if let failure {
            unlink(temporary)
            return failure
        }
        guard rename(temporary, path) == 0 else {
            let saved = errno
            unlink(temporary)
            return saved
        }
        return nil
    }

    /// Names in a directory, without `.` and `..`; nil when it cannot be opened.
    static func listDirectory(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        return names(in: dir)
    }

    /// The names an open directory stream holds, from its start, without `.` and `..`.
    static func names(in dir: OpaquePointer) -> [String] {
        rewinddir(dir)
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: entry.pointee.d_name)) {
                    String(cString: $0)
                }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Creates `path` and any missing parents with `mode`. Returns the directories it created,
    /// outermost first; throws the errno of the first failure.
    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SystemCallError) -> [String] {
        if isDirectory(path) { return [] }
        var missing: [String] = []
        var current = path
        while !current.isEmpty, current != "/", !isDirectory(current) {
            missing.append(current)
            current = parent(of: current)
        }
        var created: [String] = []
        for directory in missing.reversed() {
            if mkdir(directory, mode) != 0 && errno != EEXIST {
                throw SystemCallError(call: "mkdir", path: directory, errno: errno)
            }
            // mkdir obeys the umask; the requested mode is what other users need (e.g. 0755).
            chmod(directory, mode)
            created.append(directory)
        }
        return created
    }

    @discardableResult
    static func removeFile(_ path: String) -> Bool { unlink(path) == 0 }

    @discardableResult
    static func removeDirectory(_ path: String) -> Bool { rmdir(path) == 0 }

    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The directory part of an absolute path (`/a/b` -> `/a`, `/a` -> `/`).
    static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        if slash == trimmed.startIndex { return "/" }
        return String(trimmed[..<slash])
    }

    static func lastComponent(of path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}

/// A failed system call, with the errno text (`mkdir /x: Permission denied`).
struct SystemCallError: Error, Sendable, CustomStringConvertible {
    var call: String
    var path: String
    var errno: Int32

    var description: String { "\(call) \(path): \(SystemCallError.text(errno))" }

    static func text(_ code: Int32) -> String {
        guard let message = strerror(code) else { return "errno \(code)" }
        return String(cString: message)
    }
}
