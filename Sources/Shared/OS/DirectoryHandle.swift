import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A directory opened with `O_DIRECTORY|O_NOFOLLOW`; names are resolved in it, never as paths,
/// so a directory swapped for a symbolic link meanwhile is not followed. The owner closes it.
public struct DirectoryHandle: Sendable {
    public let fd: Int32

    public init?(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        self.fd = fd
    }

    public func close() { _ = Glibc.close(fd) }

    /// The names in the directory, without `.` and `..`.
    public func names() -> [String] {
        let copy = dup(fd)
        guard copy >= 0 else { return [] }
        guard let dir = fdopendir(copy) else {
            Glibc.close(copy)
            return []
        }
        defer { closedir(dir) }
        // The copy shares the descriptor's offset: `names(in:)` rewinds first.
        return FileSystem.names(in: dir)
    }

    /// The type bits (`S_IFMT`) of `name` itself, or nil when there is no such name.
    public func fileType(_ name: String) -> mode_t? {
        var info = stat()
        guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    /// Reads the file `name` (not through a symbolic link), at most `limit` bytes; nil when it cannot.
    public func readFile(_ name: String, limit: Int = 4096) -> [UInt8]? {
        let file = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { Glibc.close(file) }
        return try? FileSystem.read(FileDescriptor(rawValue: file), limit: limit, subject: name)
    }

    /// Creates the file `name`, which must not exist yet (`O_EXCL`, no symbolic link followed),
    /// holding `bytes`.
    public func createFile(_ name: String, bytes: [UInt8], mode: mode_t = 0o644) throws(SystemCallError) {
        let file = openat(fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard file >= 0 else { throw .last("open", name) }
        defer { Glibc.close(file) }
        try FileSystem.writeAll(bytes, to: FileDescriptor(rawValue: file), subject: name)
    }

    /// Unlinks `name`; true when it is gone (also when it was already).
    public func remove(_ name: String) -> Bool {
        unlinkat(fd, name, 0) == 0 || errno == ENOENT
    }

    /// The path of `name` reached through this descriptor (`/proc/self/fd/N/name`), for calls
    /// that take only a path (`connect`): the directory is not resolved again from the top.
    public func pathThroughDescriptor(_ name: String) -> String { "/proc/self/fd/\(fd)/\(name)" }

    /// True only when a connection to the socket `name` is refused (ECONNREFUSED): stream first,
    /// then datagram (vde_switch's port sockets are datagram sockets). Anything else, including
    /// a connection that is accepted or pending, or a permission error, counts as in use.
    public func isRefusedSocket(_ name: String) -> Bool {
        let path = pathThroughDescriptor(name)
        for kind in [UnixSocket.Kind.stream, .datagram] {
            let code = UnixSocket.probe(path, kind: kind)
            if code == EPROTOTYPE { continue }
            return code == ECONNREFUSED
        }
        return false
    }
}
