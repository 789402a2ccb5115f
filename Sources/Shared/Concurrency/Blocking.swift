import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// Runs blocking calls (sockets, libvdeplug, file syncs, NSS look-ups) on a thread of their own
/// instead of the cooperative pool: with two cores the pool has two threads, and one stuck call
/// must not stall the process. Used by both executables.
///
/// Each call gets a new thread, not one of Dispatch's global queue: that queue is as narrow as
/// the pool (one thread per core), so a few calls that hang (a probe of a hung switch) would
/// starve every later call and even the timers of ``run(timeout:_:)``.
public enum Blocking {
    /// Runs `work` on a thread of its own and returns its result.
    ///
    /// The thread is joined once it has handed over the result (it ends right after): its stack
    /// goes back to the kernel now, not when the process next starts a thread
    /// (``OSThread/start(_:)``). The wait is the thread's last steps, since it has resumed this
    /// task already.
    public static func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        var thread: pthread_t?
        let value = await withCheckedContinuation { continuation in
            thread = startThread(joinable: true) { continuation.resume(returning: work()) }
        }
        if let thread { OSThread.join(thread) }
        return value
    }

    /// Like ``run(_:)``, but gives up after `timeout` and returns nil. A call that cannot be
    /// interrupted (libvdeplug's `vde_open` on a full switch) goes on in its thread and its result
    /// is dropped, so `work` must clean up after itself. The timeout fires on a serial queue of
    /// its own, so neither a busy cooperative pool nor blocked Dispatch threads can delay it.
    public static func run<T: Sendable>(timeout: Duration, _ work: @escaping @Sendable () -> T) async -> T? {
        let resumed = OnceFlag()
        return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let resumeOnce: @Sendable (T?) -> Void = { value in
                if resumed.claim() { continuation.resume(returning: value) }
            }
            timers.asyncAfter(deadline: .now() + .nanoseconds(max(0, timeout.nanoseconds))) { resumeOnce(nil) }
            _ = startThread(joinable: false) { resumeOnce(work()) }
        }
    }

    /// Where the timeouts of ``run(timeout:_:)`` fire (a serial queue gets a thread of its own).
    private static let timers = DispatchQueue(label: "Blocking.timers")

    /// Runs `body` on a new thread, which the caller joins when `joinable` (Dispatch's global
    /// queue if no thread can be made: then nil).
    private static func startThread(joinable: Bool, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
        do {
            if joinable { return try OSThread.start(body) }
            try OSThread.detach(body)
        } catch {
            DispatchQueue.global().async(execute: body)
        }
        return nil
    }
}

extension Duration {
    /// Whole nanoseconds (saturating), for Dispatch deadlines.
    var nanoseconds: Int {
        let (seconds, attoseconds) = components
        let (product, overflow) = Int(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : product.addingReportingOverflow(Int(attoseconds / 1_000_000_000)).partialValue
    }

    /// Whole milliseconds, for poll(2) timeouts and messages.
    public var milliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}

/// A serial executor of its own for an actor whose isolated code makes blocking calls that must
/// stay inside its isolation (the supervisor's plugin writes and syncs its state file between
/// validating a change and making it current; an `await` there would let another call change the
/// state in between). The actor's jobs run one at a time on a private Dispatch queue, so a slow
/// `fsync` or NSS look-up blocks that queue's thread, never a thread of the cooperative pool.
public final class SerialQueueExecutor: SerialExecutor {
    private let queue: DispatchQueue
    private let key = DispatchSpecificKey<Bool>()

    public init(label: String) {
        queue = DispatchQueue(label: label)
        queue.setSpecific(key: key, value: true)
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// True when called from a job of this executor.
    public var isCurrent: Bool { DispatchQueue.getSpecific(key: key) == true }
}
