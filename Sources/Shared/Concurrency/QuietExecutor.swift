import CLinux
@_spi(ExperimentalScheduling) import _Concurrency

#if canImport(Glibc)
    import Glibc
#endif

/// A global executor for Swift concurrency that costs nothing when nothing happens: its threads
/// sleep on a condition variable with no timeout unless a `Task.sleep` is due, so an idle
/// process makes no system call at all. The worker installs it (``installAsGlobal()``) first
/// thing in `main`, one per network, because Dispatch's global executor does not go quiet.
///
/// Why not Dispatch: on Linux the first thread of a Dispatch global (non-overcommit) queue starts
/// `_dispatch_workq_monitor_pools`, a 1 s timer on the manager thread that runs for the rest of
/// the process (swift-corelibs-libdispatch, src/event/workqueue.c). Swift's default executor runs
/// every task there, so each worker woke once a second for nothing: 0.73 % of one CPU at 100 idle
/// networks, half of the plugin's whole idle cost (docs/benchmarks.md, "Idle CPU").
///
/// How it is reached: jobs of the global executor arrive through the concurrency runtime's
/// `swift_task_enqueueGlobal*_hook`s (``installAsGlobal()``), and each job runs with this
/// executor as its task executor, so that `Task.sleep` (which asks the current task executor
/// whether it can schedule, Swift 6.2 and later) lands in ``enqueue(_:after:tolerance:clock:)``
/// rather than in Dispatch's timers. Main-actor jobs still go to Dispatch's main queue, which is
/// serial and so served by overcommit threads that start no monitor; the worker has none.
///
/// Threads: one waits for work for the life of the process; more are started while every thread
/// is busy (a job that blocks must not stall the rest, which the monitor used to handle by adding
/// threads), up to ``maximumThreads``, and each extra one ends after ``spareThreadLifetime`` without
/// work. Job priorities are not honoured: a worker's jobs are few and short.
final class QuietExecutor: TaskExecutor, SchedulingExecutor, @unchecked Sendable {
    /// The process's executor (``installAsGlobal()`` makes it the global one).
    static let shared = QuietExecutor(maximumThreads: max(4, 2 * activeProcessors()))

    /// The most threads that run jobs at once.
    let maximumThreads: Int
    /// How long a thread beyond the permanent ones waits for work before it ends.
    let spareThreadLifetime: Duration

    /// The two threads that never end (the first one started, or the caller of
    /// ``serveOnCurrentThread(_:)``, and one more): a job that starts another and then waits a
    /// moment (most of them) finds the second one idle instead of making a thread.
    static let permanentThreads = 2

    private let condition = ConditionLock()
    /// Guarded by `condition`.
    private var ready: [UnownedJob] = []
    private var readyHead = 0
    private var timers = TimerHeap<UnownedJob>()
    private var threads = 0
    private var idleThreads = 0
    /// Idle threads signalled that have not woken yet: they are not available for more work.
    private var wakeupsPending = 0
    private var timersScheduled = 0

    private var mostThreads = 0

    /// Threads that run jobs now, the most there were at once, and jobs that have waited for a
    /// deadline (for tests).
    var counts: (threads: Int, mostThreads: Int, timersScheduled: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (threads, mostThreads, timersScheduled)
    }

    init(maximumThreads: Int, spareThreadLifetime: Duration = .seconds(5)) {
        self.spareThreadLifetime = spareThreadLifetime
        self.maximumThreads = max(Self.permanentThreads, maximumThreads)
    }

    // MARK: Executor

    func enqueue(_ job: consuming ExecutorJob) {
        push(UnownedJob(job))
    }

    func enqueue<C: Clock>(
        _ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C
    ) {
        schedule(UnownedJob(job), in: Self.nanoseconds(of: delay))
    }

    func enqueue<C: Clock>(
        _ job: consuming ExecutorJob, at instant: C.Instant, tolerance: C.Duration?, clock: C
    ) {
        schedule(UnownedJob(job), in: Self.nanoseconds(of: clock.now.duration(to: instant)))
    }

    /// Runs `job` on a thread of this executor, now or as soon as one is free.
    func push(_ job: UnownedJob) {
        condition.lock()
        ready.append(job)
        let start = arrangeService()
        condition.unlock()
        if let start { startThread(permanent: start) }
    }

    /// Runs `job` once `nanoseconds` have passed on the monotonic clock.
    func schedule(_ job: UnownedJob, in nanoseconds: UInt64) {
        guard nanoseconds > 0 else { return push(job) }
        let due = MonotonicClock.now &+ nanoseconds
        condition.lock()
        let earliest = timers.insert(job, due: due)
        timersScheduled += 1
        var start: Bool?
        if threads == 0 {
            threads += 1
            start = true
        } else if earliest {
            // Waiting threads sleep until the old earliest deadline: wake them to re-arm.
            condition.broadcast()
        }
        condition.unlock()
        if let start { startThread(permanent: start) }
    }

    /// Makes sure someone will take the waiting jobs (the lock held): wakes an idle thread that
    /// no earlier call woke yet, or else asks for a new thread while fewer than the maximum run.
    /// Returns whether the new thread is permanent, or nil when none is needed.
    private func arrangeService() -> Bool? {
        guard readyHead < ready.count else { return nil }
        if idleThreads > wakeupsPending {
            wakeupsPending += 1
            condition.signal()
            return nil
        }
        guard threads < maximumThreads else { return nil }
        threads += 1
        mostThreads = max(mostThreads, threads)
        return threads <= Self.permanentThreads
    }

    /// Runs `body` as the first task and gives the calling thread to this executor for good, as
    /// its permanent thread: the worker's main thread, so that no other thread sits idle beside it.
    func serveOnCurrentThread(_ body: @escaping @Sendable () async -> Void) -> Never {
        condition.lock()
        threads += 1
        // Counted as idle and woken while the task is enqueued, so that no second thread starts for it.
        idleThreads += 1
        condition.unlock()
        Task.detached { await body() }
        condition.lock()
        idleThreads -= 1
        wakeupsPending = 0
        condition.unlock()
        serve(permanent: true)
        fatalError("unreachable: a permanent thread serves for ever")
    }

    // MARK: Threads

    private func startThread(permanent: Bool) {
        do {
            try OSThread.detach { [self] in serve(permanent: permanent) }
        } catch {
            condition.lock()
            threads -= 1
            let none = threads == 0
            condition.unlock()
            // Without any thread nothing would ever run again; with one, the job waits its turn.
            if none { fatalError("QuietExecutor: cannot start a thread: \(error)") }
        }
    }

    /// One thread's life: run what is ready or due, wait otherwise; a thread that is not
    /// `permanent` ends after ``spareThreadLifetime`` without work. A thread that takes a job
    /// while others still wait first arranges for them (``arrangeService()``): the job it runs
    /// may block for long.
    private func serve(permanent: Bool) {
        condition.lock()
        var idleSince: UInt64?
        while true {
            let now = MonotonicClock.now
            while let due = timers.popDue(now: now) { ready.append(due) }
            if readyHead < ready.count {
                let job = ready[readyHead]
                readyHead += 1
                if readyHead == ready.count {
                    ready.removeAll(keepingCapacity: ready.capacity <= 64)
                    readyHead = 0
                }
                let start = arrangeService()
                idleSince = nil
                condition.unlock()
                if let start { startThread(permanent: start) }
                job.runSynchronously(on: asUnownedTaskExecutor())
                condition.lock()
                continue
            }
            let spareEnd = permanent ? nil : (idleSince ?? now) &+ Self.nanoseconds(of: spareThreadLifetime)
            if let spareEnd, now >= spareEnd {
                threads -= 1
                condition.unlock()
                return
            }
            if !permanent, idleSince == nil { idleSince = now }
            let wakeAt = [timers.earliest, spareEnd].compactMap { $0 }.min()
            idleThreads += 1
            if let wakeAt { condition.wait(until: wakeAt) } else { condition.wait() }
            idleThreads -= 1
            if wakeupsPending > 0 { wakeupsPending -= 1 }
        }
    }

    // MARK: Installing

    /// Makes ``shared`` the global executor of this process: call it before the first task.
    /// Returns false when the runtime has no hooks to install into (then Dispatch stays).
    @discardableResult
    static func installAsGlobal() -> Bool {
        let enqueue: @convention(thin) (UnownedJob, OriginalEnqueue) -> Void = { job, _ in
            QuietExecutor.shared.push(job)
        }
        let withDelay: @convention(thin) (UInt64, UnownedJob, OriginalDelay) -> Void = { delay, job, _ in
            QuietExecutor.shared.schedule(job, in: delay)
        }
        let withDeadline: @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob, OriginalDeadline) -> Void =
            {
                seconds, nanoseconds, _, _, _, job, _ in
                let due = UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, nanoseconds))
                let now = MonotonicClock.now
                QuietExecutor.shared.schedule(job, in: due > now ? due - now : 0)
            }
        return clinux_install_global_executor_hooks(
            unsafeBitCast(enqueue, to: UnsafeMutableRawPointer.self),
            unsafeBitCast(withDelay, to: UnsafeMutableRawPointer.self),
            unsafeBitCast(withDeadline, to: UnsafeMutableRawPointer.self)) == 0
    }

    private typealias OriginalEnqueue = @convention(thin) (UnownedJob) -> Void
    private typealias OriginalDelay = @convention(thin) (UInt64, UnownedJob) -> Void
    private typealias OriginalDeadline = @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob) -> Void

    // MARK: Time

    /// Whole nanoseconds of a clock's duration, 0 for a negative one; a clock whose durations are
    /// not `Duration` runs its jobs at once.
    static func nanoseconds<D: DurationProtocol>(of duration: D) -> UInt64 {
        guard let duration = duration as? Duration, duration > .zero else { return 0 }
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : whole &+ UInt64(attoseconds / 1_000_000_000)
    }

    private static func activeProcessors() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

/// The worker's way to ``QuietExecutor`` (internal, because its conformance to the scheduling
/// protocol that `Task.sleep` looks for is still SPI in Swift 6.3).
public enum QuietGlobalExecutor {
    /// Makes the quiet executor the global one; call it before the first task. False when the
    /// runtime has no hooks to install into (then Dispatch stays).
    @discardableResult
    public static func install() -> Bool { QuietExecutor.installAsGlobal() }

    /// Runs `body` as the first task and gives the calling thread to the executor for good.
    public static func serveOnCurrentThread(_ body: @escaping @Sendable () async -> Void) -> Never {
        QuietExecutor.shared.serveOnCurrentThread(body)
    }
}

/// Jobs waiting for a deadline, earliest first (a binary min-heap; equal deadlines in the order
/// they came).
struct TimerHeap<Element> {
    private struct Entry {
        var due: UInt64
        var order: UInt64
        var job: Element
        func before(_ other: Entry) -> Bool { (due, order) < (other.due, other.order) }
    }

    private var entries: [Entry] = []
    private var nextOrder: UInt64 = 0

    var earliest: UInt64? { entries.first?.due }
    var count: Int { entries.count }

    /// Adds `job`; true when it is now the earliest.
    mutating func insert(_ job: Element, due: UInt64) -> Bool {
        entries.append(Entry(due: due, order: nextOrder, job: job))
        nextOrder &+= 1
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].before(entries[parent]) else { break }
            entries.swapAt(child, parent)
            child = parent
        }
        return child == 0
    }

    /// The earliest job if it is due at `now`.
    mutating func popDue(now: UInt64) -> Element? {
        guard let first = entries.first, first.due <= now else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < entries.count, entries[left].before(entries[smallest]) { smallest = left }
                if right < entries.count, entries[right].before(entries[smallest]) { smallest = right }
                if smallest == parent { break }
                entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first.job
    }
}
