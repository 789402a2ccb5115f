import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The process's one watcher of descriptors: one thread blocked in `epoll_wait` for all of them,
/// started on first use, so waiting for events (a pidfd's process exited, a dup'd tun descriptor
/// whose tap was deleted, the pipes of ``PipeLines``, whose epoll set it watches) costs nothing
/// while nothing happens, however many are watched. No timeouts and no polling.
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
        /// The one watch of each descriptor: watching it again replaces that watch in O(1) (the
        /// pipe poller re-arms its epoll set after every round; at 1000 networks a scan of all
        /// watches per round would be one of 2000 or more).
        var tokenByFD: [Int32: Token] = [:]
        var next: Token = 1

        mutating func remove(_ token: Token) -> Watch? {
            guard let watch = watches.removeValue(forKey: token) else { return nil }
            if tokenByFD[watch.fd] == token { tokenByFD[watch.fd] = nil }
            return watch
        }
    }

    /// Nil when no epoll instance could be made (out of descriptors) or no thread started.
    public static let shared: DescriptorWatcher? = make(startingThread: !hostedByCaller.load(ordering: .acquiring))

    /// Set by ``serveOnCallingThread(hosting:after:)`` before anything can use ``shared``, which then
    /// starts no thread of its own.
    private static let hostedByCaller = Atomic<Bool>(false)

    /// The thread's name, as `top -H` and `/proc/PID/task/*/comm` show it.
    static let threadName = "DescriptorWatch"

    /// A watcher with its own epoll instance and, unless the caller will run ``loop(guest:)``
    /// itself, its own thread, which also serves `guest` (``shared`` is the process's; tests make
    /// their own to measure its thread).
    static func make(startingThread: Bool = true, hosting guest: (any Guest)? = nil) -> DescriptorWatcher? {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { return nil }
        let watcher = DescriptorWatcher(epoll: epoll, hasThread: startingThread)
        guard startingThread else { return watcher }
        do {
            try OSThread.detach { watcher.loop(guest: guest) }
        } catch {
            close(epoll)
            return nil
        }
        return watcher
    }

    /// Makes the calling thread the shared watcher's (a process's main thread, which would
    /// otherwise only park): runs `start` (which starts the process's first task), then serves
    /// the watcher on this thread for good. A thread of its own cost every worker about 20 kB of
    /// stack (docs/benchmarks.md, "The fork server"). Parks instead when ``shared`` was in use
    /// already (it has its thread) or could not be made.
    ///
    /// With a `guest` (the worker's executor), this thread also runs the guest's work between
    /// its waits, so that the process needs no thread for its jobs (see ``Guest``).
    public static func serveOnCallingThread(hosting guest: (any Guest)? = nil, after start: () -> Void) -> Never {
        hostedByCaller.store(true, ordering: .releasing)
        start()
        if let shared, !shared.hasThread {
            shared.loop(guest: guest)
        }
        if let guest {
            // ``shared`` has a thread of its own (it was in use before this call) or could not be
            // made: the guest's work still needs this thread, with a watcher of its own.
            guard let own = make(startingThread: false) else {
                fatalError("DescriptorWatcher: no epoll instance for its guest: \(SystemCallError.text(errno))")
            }
            own.loop(guest: guest)
        }
        let parked = ConditionLock()
        parked.lock()
        while true { parked.wait() }
    }

    private let epoll: Int32
    /// False when the thread that made ``shared`` serves it (``serveOnCallingThread(hosting:after:)``).
    private let hasThread: Bool
    private let state = Mutex(State())

    private init(epoll: Int32, hasThread: Bool) {
        self.epoll = epoll
        self.hasThread = hasThread
    }

    /// Calls `handler` once when `events` (or an error or hang-up) occur on `fd`. Watching a
    /// descriptor again replaces its earlier watch (epoll keeps one registration per file).
    ///
    /// A dropped watch leaves the lock before it is released: its handler's captures may cancel
    /// a watch as they go (a `TapWatch`), which locked again from inside and crashed the test run
    /// ("Recursive call to lock Mutex") when a descriptor number was watched again.
    public func watch(
        _ fd: Int32, events: Events = .readable,
        _ handler: @escaping @Sendable () -> Void
    ) throws(SystemCallError) -> Token {
        let (token, replaced) = try state.withLock { state throws(SystemCallError) -> (Token, Watch?) in
            let token = state.next
            state.next += 1
            let flags = events.rawValue | UInt32(EPOLLONESHOT.rawValue)
            guard clinux_epoll_arm(epoll, fd, flags, token) == 0 else { throw .last("epoll_ctl", "fd \(fd)") }
            let replaced = state.tokenByFD[fd].flatMap { state.remove($0) }
            state.watches[token] = Watch(fd: fd, handler: handler)
            state.tokenByFD[fd] = token
            return (token, replaced)
        }
        _ = consume replaced
        return token
    }

    /// Drops a watch whose handler has not run yet (it then never runs).
    public func cancel(_ token: Token) {
        _ = state.withLock { $0.remove(token) }
    }

    /// Drops the watch of `fd` (before closing it, when its handler must not run).
    public func forget(_ fd: Int32) {
        _ = state.withLock { state in state.tokenByFD[fd].flatMap { state.remove($0) } }
    }

    private func loop(guest: (any Guest)? = nil) -> Never {
        if hasThread { _ = clinux_name_thread(Self.threadName) }
        let wake = guest.map { attach($0) }
        while true {
            // The guest's work first (what the last event or another thread made ready), then
            // a wait no longer than its next timer.
            let wait = guest?.runReady()
            var token: UInt64 = 0
            guard clinux_epoll_wait_one_ns(epoll, &token, wait.map { Int64(clamping: $0) } ?? -1) == 1 else { continue }
            if token == Self.wakeToken, let wake {
                var count: UInt64 = 0
                _ = read(wake, &count, 8)
                continue
            }
            let handler = state.withLock { $0.remove(token)?.handler }
            handler?()
        }
    }

    /// The token of the guest's eventfd (watches count up from 1).
    private static let wakeToken = Token.max

    /// Registers an eventfd (level-triggered, for good) that ends the loop's wait when the guest
    /// has work from another thread, and hands the guest its way to write it.
    private func attach(_ guest: any Guest) -> Int32 {
        let fd = clinux_eventfd()
        guard fd >= 0, clinux_epoll_arm(epoll, fd, UInt32(EPOLLIN.rawValue), Self.wakeToken) == 0 else {
            // Without it, work from other threads would wait for the next event: not workable.
            fatalError(
                "DescriptorWatcher: cannot make the eventfd that wakes its guest: \(SystemCallError.text(errno))")
        }
        guest.attach(wake: {
            var one: UInt64 = 1
            _ = write(fd, &one, 8)
        })
        return fd
    }
}

extension DescriptorWatcher {
    /// Work that the watcher's thread runs between its waits (``serveOnCallingThread(hosting:after:)``):
    /// the worker's executor, whose jobs then need no thread of their own. Its jobs and the
    /// watcher's handlers take turns on one thread, so neither may block for long (the rule for
    /// both already).
    public protocol Guest: AnyObject, Sendable {
        /// Called once, on the watcher's thread, before its loop: `wake` ends the watcher's
        /// current wait, from any thread.
        func attach(wake: @escaping @Sendable () -> Void)
        /// Runs what is ready, on the watcher's thread, and returns how long the watcher may
        /// wait for an event before it must call again, in nanoseconds (nil: no limit).
        func runReady() -> UInt64?
    }
}

extension DescriptorWatcher {
    /// Waits for `events` (or an error or hang-up) on `fd`. False when no watch could be set
    /// (the kernel refused the registration) or the calling task was cancelled while waiting:
    /// the watch is then dropped.
    public func wait(for events: Events, on fd: Int32) async -> Bool {
        let pending = PendingWait()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                guard pending.begin(continuation) else { return }
                do {
                    let token = try watch(fd, events: events) { _ = pending.finish(true) }
                    if !pending.keep(token) { cancel(token) }
                } catch {
                    _ = pending.finish(false)
                }
            }
        } onCancel: {
            if let token = pending.finish(false) { cancel(token) }
        }
    }

    /// Writes all of `bytes` to `fd`, which must be non-blocking, waiting in the process's watcher
    /// while it is full (a pipe or socket whose reader is slow): no thread waits meanwhile.
    /// Throws on an error (EPIPE: the reader is gone; SIGPIPE must be ignored), ECANCELED when
    /// the calling task is cancelled while waiting; what was written stays written.
    public static func writeAll(_ bytes: ArraySlice<UInt8>, to fd: Int32) async throws(SystemCallError) {
        var offset = bytes.startIndex
        while true {
            offset += try writeWithoutWaiting(bytes[offset...], to: fd)
            if offset == bytes.endIndex { return }
            guard let watcher = shared else { throw SystemCallError(call: "epoll_create1", errno: EMFILE) }
            guard await watcher.wait(for: .writable, on: fd) else {
                throw SystemCallError(call: "write", subject: "fd \(fd)", errno: ECANCELED)
            }
        }
    }

    /// ``writeAll(_:to:)`` of an array.
    public static func writeAll(_ bytes: [UInt8], to fd: Int32) async throws(SystemCallError) {
        try await writeAll(bytes[...], to: fd)
    }

    /// Writes what the non-blocking `fd` takes now and returns how many bytes that was (all of
    /// them, or fewer when it is full). Throws on an error (EPIPE: the reader is gone).
    public static func writeWithoutWaiting(_ bytes: ArraySlice<UInt8>, to fd: Int32) throws(SystemCallError) -> Int {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written > 0 {
                offset += written
                continue
            }
            let code = written < 0 ? errno : EIO
            if code == EINTR { continue }
            if code == EAGAIN { break }
            throw SystemCallError(call: "write", subject: "fd \(fd)", errno: code)
        }
        return offset - bytes.startIndex
    }
}

/// One ``DescriptorWatcher/wait(for:on:)``: its continuation is resumed exactly once, by the
/// watch or by cancellation, whichever comes first.
private final class PendingWait: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Bool, Never>?
        var token: DescriptorWatcher.Token?
        var finished = false
    }

    private let state = Mutex(State())

    /// Stores the continuation; false (having resumed it with false) when cancelled already.
    func begin(_ continuation: CheckedContinuation<Bool, Never>) -> Bool {
        let cancelled = state.withLock { state -> Bool in
            if state.finished { return true }
            state.continuation = continuation
            return false
        }
        if cancelled { continuation.resume(returning: false) }
        return !cancelled
    }

    /// Remembers the watch to drop on cancellation; false when the wait has ended already (the
    /// caller drops the watch).
    func keep(_ token: DescriptorWatcher.Token) -> Bool {
        state.withLock { state in
            if state.finished { return false }
            state.token = token
            return true
        }
    }

    /// Ends the wait with `result` (once: later calls do nothing) and returns the watch to drop.
    func finish(_ result: Bool) -> DescriptorWatcher.Token? {
        let (continuation, token): (CheckedContinuation<Bool, Never>?, DescriptorWatcher.Token?) = state.withLock {
            state in
            if state.finished { return (nil, nil) }
            state.finished = true
            defer {
                state.continuation = nil
                state.token = nil
            }
            return (state.continuation, state.token)
        }
        continuation?.resume(returning: result)
        return token
    }
}
