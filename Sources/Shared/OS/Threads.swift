#if canImport(Glibc)
    import Glibc
#endif

/// Threads of our own, for work that must not sit on Dispatch's global queue or on the Swift
/// executor's threads: blocking calls (``Blocking``), the descriptor watcher and the
/// quiet executor's threads.
public enum OSThread {
    /// Runs `body` on a new detached thread. Throws when the thread cannot be made (EAGAIN: the
    /// process or the unit is at its task limit); `body` then never runs.
    public static func detach(_ body: @escaping @Sendable () -> Void) throws(SystemCallError) {
        _ = try make(body, detached: true)
    }

    /// Runs `body` on a new thread that must be ``join(_:)``ed once `body` is done. What joining
    /// buys: glibc unmaps an ended thread's stack when it is joined, but a detached thread's
    /// only when the process next starts or ends a thread (its stack is still in use while it
    /// ends, even with the stack cache off); until then the pages it touched stay, 20 kB of a
    /// worker's memory for good after its last blocking call (docs/benchmarks.md). Throws as
    /// ``detach(_:)`` does.
    public static func start(_ body: @escaping @Sendable () -> Void) throws(SystemCallError) -> pthread_t {
        try make(body, detached: false)
    }

    /// Waits until a thread of ``start(_:)`` has ended, and frees it.
    public static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }

    private static func make(_ body: @escaping @Sendable () -> Void, detached: Bool) throws(SystemCallError)
        -> pthread_t
    {
        final class Box {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let box = Unmanaged.passRetained(Box(body))
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        if detached { pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED)) }
        var thread = pthread_t()
        let started = pthread_create(
            &thread, &attributes,
            { raw in
                guard let raw else { return nil }
                Unmanaged<Box>.fromOpaque(raw).takeRetainedValue().body()
                return nil
            }, box.toOpaque())
        if started != 0 {
            box.release()
            throw SystemCallError(call: "pthread_create", errno: started)
        }
        return thread
    }
}

/// A mutex with one condition variable on the monotonic clock, for threads that wait for work
/// without a timeout when there is none (a timer that fires while idle is what ``QuietExecutor``
/// exists to avoid). Lives as long as its owner; both are allocated once and never move.
public final class ConditionLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }

    /// Waits (the lock held) until signalled.
    public func wait() { _ = pthread_cond_wait(condition, mutex) }

    /// Waits (the lock held) until signalled or `deadline` (``MonotonicClock/now``) has come.
    public func wait(until deadline: UInt64) {
        var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        _ = pthread_cond_timedwait(condition, mutex, &time)
    }

    public func signal() { pthread_cond_signal(condition) }
    public func broadcast() { pthread_cond_broadcast(condition) }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of ``ConditionLock/wait(until:)``.
public enum MonotonicClock {
    public static var now: UInt64 { reading(CLOCK_MONOTONIC) }

    /// Nanoseconds of `clock` (CLOCK_BOOTTIME for a deadline on Swift's continuous clock).
    public static func reading(_ clock: clockid_t) -> UInt64 {
        var now = timespec()
        clock_gettime(clock, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }
}
