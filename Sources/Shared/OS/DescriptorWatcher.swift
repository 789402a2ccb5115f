import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The process's one watcher of descriptors: one thread blocked in `epoll_wait` for all of them,
/// started on first use, so waiting for events (a pidfd's process exited, a dup'd tun descriptor
/// whose tap was deleted) costs nothing while nothing happens, however many are watched. No
/// timeouts and no polling.
///
/// Each ``watch(_:events:_:)`` calls its handler once (one-shot), on the watcher's thread: keep
/// handlers short and hand work on. A descriptor may be closed at any time, from any thread:
/// epoll forgets a closed file by itself, and this watcher never removes registrations by
/// descriptor number (a number reused by a new file is a new registration), so the only cost of
/// a close without ``cancel(_:)`` is the handler kept until then.
public final class DescriptorWatcher: Sendable {
    public typealias Token = UInt64

    /// What to wait for; errors and hang-ups (EPOLLERR, EPOLLHUP) are always reported.
    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: UInt32(EPOLLIN.rawValue))
        public static let writable = Events(rawValue: UInt32(EPOLLOUT.rawValue))
        /// Only errors and hang-ups.
        public static let errorsOnly: Events = []
    }

    private struct Watch {
        var fd: Int32
        var handler: @Sendable () -> Void
    }

    private struct State {
        var watches: [Token: Watch] = [:]
        var next: Token = 1
    }

    /// Nil when no epoll instance could be made (out of descriptors).
    public static let shared: DescriptorWatcher? = {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { return nil }
        let watcher = DescriptorWatcher(epoll: epoll)
        Task.detached { await Blocking.run { watcher.loop() } }
        return watcher
    }()

    private let epoll: Int32
    private let state = Mutex(State())

    private init(epoll: Int32) { self.epoll = epoll }

    /// Calls `handler` once when `events` (or an error or hang-up) occur on `fd`. Watching a
    /// descriptor again replaces its earlier watch (epoll keeps one registration per file).
    public func watch(
        _ fd: Int32, events: Events = .readable,
        _ handler: @escaping @Sendable () -> Void
    ) throws(SystemCallError) -> Token {
        try state.withLock { state throws(SystemCallError) -> Token in
            let token = state.next
            state.next += 1
            let flags = events.rawValue | UInt32(EPOLLONESHOT.rawValue)
            guard clinux_epoll_arm(epoll, fd, flags, token) == 0 else { throw .last("epoll_ctl", "fd \(fd)") }
            state.watches = state.watches.filter { $0.value.fd != fd }
            state.watches[token] = Watch(fd: fd, handler: handler)
            return token
        }
    }

    /// Drops a watch whose handler has not run yet (it then never runs).
    public func cancel(_ token: Token) {
        _ = state.withLock { $0.watches.removeValue(forKey: token) }
    }

    /// Drops every watch of `fd` (before closing it, when its handlers must not run).
    public func forget(_ fd: Int32) {
        state.withLock { $0.watches = $0.watches.filter { $0.value.fd != fd } }
    }

    private func loop() {
        while true {
            var token: UInt64 = 0
            guard clinux_epoll_wait_one(epoll, &token, -1) == 1 else { continue }
            let handler = state.withLock { $0.watches.removeValue(forKey: token)?.handler }
            handler?()
        }
    }
}
