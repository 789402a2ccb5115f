import CLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A listening unix stream socket at a path: where a worker waits for a supervisor
/// (`NetworkPaths.workerSocket`). The one place that binds, accepts and asks a peer who it is.
///
/// A socket file at the path that accepts connections is never unlinked (another process serves
/// there: ``bind(_:mode:)`` throws EADDRINUSE); one that refuses them is stale and is replaced.
/// ``close()`` unlinks the path only while it is still this socket's file (same device and inode).
public final class UnixListener: Sendable {
    /// The listening descriptor (non-blocking, close-on-exec).
    public let fd: Int32
    public let path: String
    private let device: UInt64
    private let inode: UInt64
    private let closed = OnceFlag()

    private init(fd: Int32, path: String, device: UInt64, inode: UInt64) {
        self.fd = fd
        self.path = path
        self.device = device
        self.inode = inode
    }

    /// Binds and listens at `path`, then sets the file's mode to `mode`. A stale socket file
    /// (nothing accepts) is unlinked first; a socket that answers throws EADDRINUSE, and any
    /// other kind of file there EEXIST. A peer that connected in the moment before the chmod is
    /// no risk: accepted connections are checked with ``peer(of:)``.
    public static func bind(_ path: String, mode: mode_t = 0o600) throws(SystemCallError) -> UnixListener {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemCallError(call: "bind", subject: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let fd = socket(
            AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .last("socket", path) }
        func attempt() -> Int32 {
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            return result == 0 ? 0 : errno
        }
        var code = attempt()
        if code == EADDRINUSE {
            // Only a socket that nobody listens on goes; anything else there stays.
            guard FileSystem.isSocket(path) else {
                Glibc.close(fd)
                throw SystemCallError(call: "bind", subject: path, errno: EEXIST)
            }
            guard UnixSocket.probe(path) == ECONNREFUSED else {
                Glibc.close(fd)
                throw SystemCallError(call: "bind", subject: path, errno: EADDRINUSE)
            }
            unlink(path)
            code = attempt()
        }
        guard code == 0 else {
            Glibc.close(fd)
            throw SystemCallError(call: "bind", subject: path, errno: code)
        }
        var info = stat()
        guard listen(fd, 8) == 0, chmod(path, mode) == 0, lstat(path, &info) == 0 else {
            let error = SystemCallError.last("listen", path)
            Glibc.close(fd)
            unlink(path)
            throw error
        }
        return UnixListener(fd: fd, path: path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Accepts one waiting connection: a blocking, close-on-exec descriptor, or nil when none waits.
    public func accept() throws(SystemCallError) -> Int32? {
        while true {
            // accept4 is not in Swift's Glibc module; children are spawned with only 0-2 open,
            // so the moment before FD_CLOEXEC is no leak.
            let connection = Glibc.accept(fd, nil, nil)
            if connection >= 0 {
                _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
                // A connection inherits no O_NONBLOCK from the listener on Linux.
                return connection
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK, ECONNABORTED: return nil
            default: throw .last("accept", path)
            }
        }
    }

    /// Calls `handler` once when a connection waits (on the ``DescriptorWatcher``'s thread).
    /// False when no watcher could be armed.
    @discardableResult
    public func onConnection(_ handler: @escaping @Sendable () -> Void) -> Bool {
        guard let watcher = DescriptorWatcher.shared else { return false }
        return (try? watcher.watch(fd, events: .readable, handler)) != nil
    }

    /// Stops listening and unlinks the path if it is still this socket's file. Idempotent.
    public func close() {
        guard closed.claim() else { return }
        DescriptorWatcher.shared?.forget(fd)
        var info = stat()
        if lstat(path, &info) == 0, UInt64(info.st_dev) == device, UInt64(info.st_ino) == inode {
            unlink(path)
        }
        Glibc.close(fd)
    }

    /// Who is at the other end of the connected unix socket `fd` (`SO_PEERCRED`: the process
    /// that connected, as the kernel recorded it at `connect` or `listen`).
    public static func peer(of fd: Int32) throws(SystemCallError) -> (pid: pid_t, uid: uid_t) {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }: three 32-bit fields.
        var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else {
            throw .last("getsockopt SO_PEERCRED", "fd \(fd)")
        }
        return (credentials.0, credentials.1)
    }
}
