import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Learns from the kernel when a plug's tap is deleted, without polling.
///
/// A `vde_plug2tap` whose tap vanishes (its container's namespace destroyed, or `ip link del`
/// in the host) does not exit: it spins at most of a CPU, so the worker must stop it. Until
/// now a timer looked at every plug's `/proc/PID/fdinfo` once a second: in an idle lab of 100
/// networks that was 100 wake-ups a second. Instead the worker holds a duplicate of the plug's
/// `/dev/net/tun` descriptor (`pidfd_getfd`, which works for processes that are not its
/// children too) and waits for it in the process's one epoll thread (Shared's ``DescriptorWatcher``): when the tap is
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
    /// How long a duplicate that woke the watcher with input (traffic on the tap) stays
    /// disarmed: the old fixed poll's period (1 s), now paid only by taps that carry traffic.
    ///
    /// The kernel wakes a tun descriptor's waiters at a tap's deletion with an *input* wake-up
    /// (`sk_data_ready`), which epoll passes on only to a registration that asks for EPOLLIN
    /// (measured: EPOLLERR | EPOLLHUP alone never fired; with EPOLLIN it fired 4 to 25 ms after
    /// the deletion). Packets for the tap wake it the same way, so each one-shot watch, when it
    /// fires, polls the descriptor once: an error or hang-up is the tap's end, anything else is
    /// traffic and the watch is set again ``rearmDelay`` later. An idle tap never wakes the
    /// worker; the deletion of a busy one is seen within that delay.
    static let rearmDelay: Duration = .seconds(1)

    private struct State {
        /// The duplicate of the plug's tun descriptor; -1 once closed.
        var descriptor: Int32
        var token: DescriptorWatcher.Token?
    }

    /// Held while the watcher's handler looks at the descriptor, so that ``close()`` returning
    /// means the descriptor is neither looked at nor watched any more.
    private let state: Mutex<State>
    private let watcher: DescriptorWatcher
    private let rearmDelay: Duration
    private let onGone: @Sendable () -> Void

    private init(
        descriptor: Int32, watcher: DescriptorWatcher, rearmDelay: Duration,
        onGone: @escaping @Sendable () -> Void
    ) {
        state = Mutex(State(descriptor: descriptor))
        self.watcher = watcher
        self.rearmDelay = rearmDelay
        self.onGone = onGone
    }

    /// Why no watch could be set up (the caller then polls for this plug).
    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    /// Watches descriptor `tunDescriptor` of process `pid`; `onGone` runs once, on the watcher's
    /// thread, when the tap is gone (at once if it already is).
    static func start(pid: pid_t, tunDescriptor: Int32, onGone: @escaping @Sendable () -> Void) throws(Unavailable)
        -> TapWatch
    {
        guard let watcher = DescriptorWatcher.shared else { throw Unavailable(description: "no epoll instance") }
        let duplicate: Int32
        do {
            let process = try ProcessHandle(pid: pid)
            defer { process.close() }
            duplicate = try process.duplicateDescriptor(tunDescriptor)
        } catch {
            throw Unavailable(description: "\(error)")
        }
        return try watch(descriptor: duplicate, watcher: watcher, rearmDelay: rearmDelay, onGone: onGone)
    }

    /// Watches `descriptor` (taken over: closed by ``close()``) as a tap's tun descriptor.
    static func watch(
        descriptor: Int32, watcher: DescriptorWatcher, rearmDelay: Duration,
        onGone: @escaping @Sendable () -> Void
    ) throws(Unavailable) -> TapWatch {
        let watch = TapWatch(descriptor: descriptor, watcher: watcher, rearmDelay: rearmDelay, onGone: onGone)
        do {
            try watch.arm()
        } catch {
            watch.close()
            throw Unavailable(description: "\(error)")
        }
        return watch
    }

    /// True while the watch waits to be set again after traffic (for tests).
    var isDisarmed: Bool { state.withLock { $0.descriptor >= 0 && $0.token == nil } }

    private func arm() throws(SystemCallError) {
        try state.withLock { state throws(SystemCallError) in
            guard state.descriptor >= 0 else { return }
            state.token = try watcher.watch(state.descriptor, events: .readable) { [self] in fired() }
        }
    }

    private func fired() {
        let gone = state.withLock { state -> Bool in
            state.token = nil
            guard state.descriptor >= 0 else { return false }
            var probe = pollfd(fd: state.descriptor, events: 0, revents: 0)
            return poll(&probe, 1, 0) > 0 && probe.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0
        }
        if gone {
            onGone()
            return
        }
        // Traffic: look again after the delay (an idle tap is never looked at). Setting the
        // watch again on our own open descriptor can fail only for want of kernel memory
        // (ENOMEM): that is no evidence about the tap, so it is tried again after the delay.
        Task { [self] in
            while true {
                try? await Task.sleep(for: rearmDelay)
                do {
                    try arm()
                    return
                } catch {}
            }
        }
    }

    /// Stops watching and closes the duplicate; idempotent. `onGone` is not called afterwards.
    func close() {
        state.withLock { state in
            guard state.descriptor >= 0 else { return }
            if let token = state.token { watcher.cancel(token) }
            watcher.forget(state.descriptor)
            Glibc.close(state.descriptor)
            state.descriptor = -1
            state.token = nil
        }
    }

    deinit { close() }
}
