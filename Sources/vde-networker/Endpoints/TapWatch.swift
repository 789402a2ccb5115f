#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Dispatch
import Shared
import Synchronization

/// One epoll thread per worker that calls a handler once when a watched descriptor reports an
/// error or a hang-up. It sleeps in `epoll_wait` without a time limit: an idle worker with any
/// number of watched descriptors is never woken by it.
///
/// Private to the worker until the OS layer (Shared/OS) offers the same (/work/os-requests.md).
final class DescriptorWatcher: Sendable {
    /// Nil when epoll cannot be had (then nothing is watched and callers fall back to polling).
    static let shared: DescriptorWatcher? = DescriptorWatcher()

    private let epoll: Int32
    private struct Handlers {
        var next: UInt64 = 1
        var byToken: [UInt64: @Sendable () -> Void] = [:]
    }
    private let handlers = Mutex(Handlers())

    private init?() {
        let fd = clinux_epoll_create()
        guard fd >= 0 else { return nil }
        epoll = fd
        // A queue of its own: its one block runs for the life of the process.
        DispatchQueue(label: "DescriptorWatcher").async { [self] in run() }
    }

    /// Calls `handler` (on the watcher's thread) once `fd` reports an error or a hang-up.
    /// Returns the token for ``forget(_:fd:)``, or nil with errno when epoll refused `fd`.
    func watchErrors(of fd: Int32, _ handler: @escaping @Sendable () -> Void) -> UInt64? {
        let token = handlers.withLock { handlers in
            defer { handlers.next += 1 }
            handlers.byToken[handlers.next] = handler
            return handlers.next
        }
        guard clinux_epoll_watch_errors_once(epoll, fd, token) == 0 else {
            _ = handlers.withLock { $0.byToken.removeValue(forKey: token) }
            return nil
        }
        return token
    }

    /// Stops watching `fd` (which must still be open); its handler is not called after this.
    func forget(_ token: UInt64, fd: Int32) {
        _ = handlers.withLock { $0.byToken.removeValue(forKey: token) }
        _ = clinux_epoll_forget(epoll, fd)
    }

    private func run() -> Never {
        var tokens = [UInt64](repeating: 0, count: 16)
        while true {
            let n = tokens.withUnsafeMutableBufferPointer { clinux_epoll_wait_tokens(epoll, $0.baseAddress, 16) }
            guard n > 0 else { continue }  // EINTR
            for token in tokens.prefix(Int(n)) {
                let handler = handlers.withLock { $0.byToken.removeValue(forKey: token) }
                handler?()
            }
        }
    }
}

/// Learns from the kernel when a plug's tap is deleted, without polling.
///
/// A `vde_plug2tap` whose tap vanishes (its container's namespace destroyed, or `ip link del`
/// in the host) does not exit: it spins at most of a CPU, so the worker must stop it. Until
/// now a timer looked at every plug's `/proc/PID/fdinfo` once a second: in an idle lab of 100
/// networks that was 100 wake-ups a second. Instead the worker holds a duplicate of the plug's
/// `/dev/net/tun` descriptor (`pidfd_getfd`, which works for processes that are not its
/// children too) and waits for it in epoll: when the tap is unregistered, the kernel wakes the
/// tun file's waiters and its poll reports EPOLLERR. Measured here: 16 ms after `ip netns del`
/// of the namespace holding the tap, 25 ms after `ip link del` in the host. Moving the tap into
/// a namespace and renaming it (what dockerd does at Join) reports nothing.
///
/// Netlink would not do: RTM_DELLINK for a tap inside a container's namespace goes only to
/// sockets in that namespace, and a socket there would keep the namespace alive.
///
/// The duplicate shares the plug's open file, so it keeps the tap attached: it must be closed
/// (``close()``) before another plug can attach to the same tap (TUNSETIFF fails with EBUSY
/// while it is open). ``PlugProcess`` closes it whenever the plug is stopped or found exited.
final class TapWatch: Sendable {
    private let descriptor: Int32
    private let token: UInt64
    private let watcher: DescriptorWatcher
    private let closed = OnceFlag()

    private init(descriptor: Int32, token: UInt64, watcher: DescriptorWatcher) {
        self.descriptor = descriptor
        self.token = token
        self.watcher = watcher
    }

    /// Why no watch could be set up (the caller then polls for this plug).
    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    /// Watches descriptor `tunDescriptor` of process `pid`; `onGone` runs once, on the watcher's
    /// thread, when the tap is gone (at once if it already is).
    static func start(pid: pid_t, tunDescriptor: Int32, onGone: @escaping @Sendable () -> Void) throws(Unavailable) -> TapWatch {
        guard let watcher = DescriptorWatcher.shared else { throw Unavailable(description: "no epoll instance") }
        let pidfd = clinux_pidfd_open(pid)
        guard pidfd >= 0 else { throw Unavailable(description: "pidfd_open(\(pid)): \(SystemCallError.text(errno))") }
        defer { Glibc.close(pidfd) }
        let duplicate = clinux_pidfd_getfd(pidfd, tunDescriptor)
        guard duplicate >= 0 else {
            throw Unavailable(description: "pidfd_getfd(\(pid), \(tunDescriptor)): \(SystemCallError.text(errno))")
        }
        guard let token = watcher.watchErrors(of: duplicate, onGone) else {
            let code = errno
            Glibc.close(duplicate)
            throw Unavailable(description: "epoll_ctl: \(SystemCallError.text(code))")
        }
        return TapWatch(descriptor: duplicate, token: token, watcher: watcher)
    }

    /// Stops watching and closes the duplicate; idempotent. `onGone` is not called afterwards.
    func close() {
        guard closed.claim() else { return }
        watcher.forget(token, fd: descriptor)
        Glibc.close(descriptor)
    }

    deinit { close() }
}
