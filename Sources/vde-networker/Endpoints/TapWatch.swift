#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Dispatch
import Shared
import Synchronization

/// One epoll thread per worker that calls a handler once when a watched descriptor reports an
/// error or a hang-up.
///
/// The kernel wakes a tun descriptor's waiters at a tap's deletion with an *input* wake-up
/// (`sk_data_ready`), which epoll passes on only to a registration that asks for EPOLLIN
/// (measured: EPOLLERR | EPOLLHUP alone never fired; with EPOLLIN it fired 4 to 25 ms after the
/// deletion). Packets arriving for the tap wake it the same way, so each registration is
/// one-shot: when it fires, the descriptor is polled once; an error or hang-up calls the
/// handler, anything else (traffic) re-arms it ``rearmDelay`` later. An idle tap never wakes the
/// thread; a busy one wakes it at most once per ``rearmDelay``, and its deletion is then seen
/// within that delay (at once when idle).
///
/// Private to the worker until the OS layer (Shared/OS) offers the same.
final class DescriptorWatcher: Sendable {
    /// Nil when epoll cannot be had (then nothing is watched and callers fall back to polling).
    static let shared: DescriptorWatcher? = DescriptorWatcher(rearmDelay: .seconds(1))

    /// How long a descriptor that woke the thread with input stays disarmed: the old fixed poll's
    /// period (1 s), now paid only by taps that carry traffic.
    let rearmDelay: Duration

    private let epoll: Int32
    private struct Watch {
        var fd: Int32
        var handler: @Sendable () -> Void
        /// Set while disarmed after input: when to arm it again.
        var rearmAt: ContinuousClock.Instant?
    }
    private struct Watches {
        var next: UInt64 = 1
        var byToken: [UInt64: Watch] = [:]
    }
    /// Held while the thread touches a descriptor, so that ``forget(_:)`` returning means the
    /// thread will not touch it again and the owner may close it.
    private let watches = Mutex(Watches())

    /// A watcher with a thread of its own (the worker uses ``shared``; tests make their own).
    init?(rearmDelay: Duration) {
        let fd = clinux_epoll_create()
        guard fd >= 0 else { return nil }
        epoll = fd
        self.rearmDelay = rearmDelay
        // A queue of its own: its one block runs for the life of the process.
        DispatchQueue(label: "DescriptorWatcher").async { [self] in run() }
    }

    /// Calls `handler` (on the watcher's thread) once `fd` reports an error or a hang-up.
    /// Returns the token for ``forget(_:)``, or nil with errno when epoll refused `fd`.
    func watchErrors(of fd: Int32, _ handler: @escaping @Sendable () -> Void) -> UInt64? {
        watches.withLock { watches -> UInt64? in
            let token = watches.next
            guard clinux_epoll_arm_once(epoll, fd, token, 1) == 0 else { return nil }
            watches.next += 1
            watches.byToken[token] = Watch(fd: fd, handler: handler)
            return token
        }
    }

    /// Stops watching (the descriptor must still be open; the caller may close it afterwards).
    /// The handler is not called after this returns.
    func forget(_ token: UInt64) {
        watches.withLock { watches in
            guard let watch = watches.byToken.removeValue(forKey: token) else { return }
            _ = clinux_epoll_forget(epoll, watch.fd)
        }
    }

    /// True while `token` waits to be re-armed after input (for tests).
    func isDisarmed(_ token: UInt64) -> Bool {
        watches.withLock { $0.byToken[token]?.rearmAt != nil }
    }

    private func run() -> Never {
        var tokens = [UInt64](repeating: 0, count: 16)
        while true {
            let timeout = watches.withLock { watches -> Int32 in
                guard let next = watches.byToken.values.compactMap(\.rearmAt).min() else { return -1 }
                let left = next - ContinuousClock.now
                return left <= .zero ? 0 : Int32(min(left.milliseconds + 1, 60_000))
            }
            let n = tokens.withUnsafeMutableBufferPointer { clinux_epoll_wait_tokens(epoll, $0.baseAddress, 16, timeout) }
            var gone: [@Sendable () -> Void] = []
            watches.withLock { watches in
                for token in tokens.prefix(Int(max(n, 0))) {
                    guard let watch = watches.byToken[token] else { continue }
                    var probe = pollfd(fd: watch.fd, events: 0, revents: 0)
                    if poll(&probe, 1, 0) > 0, probe.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                        watches.byToken[token] = nil
                        _ = clinux_epoll_forget(epoll, watch.fd)
                        gone.append(watch.handler)
                    } else {
                        watches.byToken[token]?.rearmAt = .now + rearmDelay
                    }
                }
                let now = ContinuousClock.now
                for (token, watch) in watches.byToken {
                    guard let due = watch.rearmAt, due <= now else { continue }
                    watches.byToken[token]?.rearmAt = nil
                    _ = clinux_epoll_arm_once(epoll, watch.fd, token, 0)
                }
            }
            for handler in gone { handler() }
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
/// children too) and waits for it in epoll (``DescriptorWatcher``): when the tap is
/// unregistered, the kernel wakes the tun file's waiters and its poll reports EPOLLERR.
/// Measured here: 4 ms after `ip netns del` of the namespace holding the tap, 25 ms after
/// `ip link del` in the host. Moving the tap into a namespace and renaming it (what dockerd
/// does at Join) reports nothing.
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
        watcher.forget(token)
        Glibc.close(descriptor)
    }

    deinit { close() }
}
