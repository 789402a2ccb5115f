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
/// rather than in Dispatch's timers. Main-actor jobs would still go to Dispatch's main queue, which
/// nothing drains while the main thread runs no job (the worker's serves the descriptor
/// watcher): a process that uses this executor has no `@MainActor` code (the worker has none).
///
/// Threads: started when a job arrives and no thread is idle, up to ``maximumThreads`` (one for
/// the worker, see ``shared``: a job must not block, since nothing adds threads as Dispatch's
/// monitor did), and ended after ``idleThreadLifetime`` without work, as Dispatch's are, so that
/// their stacks go back to the kernel; the last idle thread stays while a sleep is pending. Job
/// priorities are not honoured: a worker's jobs are few and short.
///
/// Hosted (``hostedByWatcher()``, the worker): no thread at all. The thread that serves the
/// ``DescriptorWatcher`` runs the jobs between its waits and waits no longer than the next
/// timer; work that arrives from another thread (a blocking call's, a probe's) wakes it through
/// an eventfd. The executor's thread, which the supervisor's liveness checks kept alive, cost
/// every worker 20 to 24 kB of stack: 1060 → 1034 kB per network at 100 × 2 (A B A B).
final class QuietExecutor: TaskExecutor, SchedulingExecutor, @unchecked Sendable {
    /// The process's executor (``installAsGlobal()`` makes it the global one): one thread, or
    /// none when hosted (the worker). A worker's jobs are short and its blocking calls run on
    /// threads of their own (``Blocking``), so a second thread only ran the other half of an
    /// actor hop, and the supervisor's liveness check every 2 s kept it from its 5 s expiry. It
    /// cost 44 kB per worker (A/B at 50 networks: 950 vs 907 kB, bench/lib/worker_memory.py) and
    /// bought no speed (sizecost, A B A B: endpoint cycle 18.1 and 16.5 ms with two threads, 13.7
    /// and 15.6 with one). Before, as wide as the cores: with four threads on two cores a
    /// liveness check started four.
    static let shared = QuietExecutor(maximumThreads: 1)

    /// The most threads that run jobs at once.
    let maximumThreads: Int
    /// How long a thread waits for work before it ends (unless it is the one left to wait for a
    /// pending `Task.sleep`).
    let idleThreadLifetime: Duration

    private let condition = ConditionLock()
    /// Guarded by `condition`.
    private var ready: [UnownedJob] = []
    private var readyHead = 0
    private var timers = TimerHeap<UnownedJob>()
    private var threads = 0
    private var idleThreads = 0
    /// Idle threads signalled that have not woken yet: they are not available for more work.
    private var wakeupsPending = 0
    /// The threads of ``serve()`` (at most ``maximumThreads``: a scan is cheaper than a set).
    private var jobThreads: [pthread_t] = []
    private var timersScheduled = 0

    private var mostThreads = 0

    /// Set when a descriptor watcher's thread runs the jobs (``hostedByWatcher()``): then this
    /// executor starts no thread at all. Guarded by `condition`.
    private var host: Host?

    private struct Host {
        var thread: pthread_t?
        var wake: (@Sendable () -> Void)?
        /// The host is in (or about to enter) its wait: a job from another thread must wake it.
        var waiting = false
    }

    /// Jobs the host runs before it looks at its descriptors again, so that jobs that keep
    /// making jobs cannot starve the events.
    private static let jobsPerTurn = 64

    /// Threads that run jobs now, the most there were at once, and jobs enqueued with a
    /// deadline, passed or not (for tests).
    var counts: (threads: Int, mostThreads: Int, timersScheduled: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (threads, mostThreads, timersScheduled)
    }

    init(maximumThreads: Int, idleThreadLifetime: Duration = .seconds(5)) {
        self.idleThreadLifetime = idleThreadLifetime
        self.maximumThreads = max(1, maximumThreads)
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
        let caller = pthread_self()
        condition.lock()
        ready.append(job)
        if host != nil {
            let wake = wakeHost(caller: caller)
            condition.unlock()
            wake?()
            return
        }
        let start = arrangeService(fromJobThread: jobThreads.contains(caller))
        condition.unlock()
        if start { startThread() }
    }

    /// Runs `job` once `nanoseconds` have passed on the monotonic clock. A deadline that has
    /// passed already (a 1 ms `Task.sleep` whose enqueue came late on a loaded machine: seen in
    /// CI) runs the job now; it is counted all the same, as a deadline this executor was asked for.
    func schedule(_ job: UnownedJob, in nanoseconds: UInt64) {
        guard nanoseconds > 0 else {
            condition.lock()
            timersScheduled += 1
            condition.unlock()
            return push(job)
        }
        let due = MonotonicClock.now &+ nanoseconds
        condition.lock()
        let earliest = timers.insert(job, due: due)
        timersScheduled += 1
        if host != nil {
            let wake = earliest ? wakeHost(caller: pthread_self()) : nil
            condition.unlock()
            wake?()
            return
        }
        var start = false
        if threads == 0 {
            threads += 1
            start = true
        } else if earliest {
            // Waiting threads sleep until the old earliest deadline: wake them to re-arm.
            condition.broadcast()
        }
        condition.unlock()
        if start { startThread() }
    }

    /// Makes sure someone will take the waiting jobs (the lock held): wakes an idle thread that
    /// no earlier call woke yet, or else asks for a new thread while fewer than the maximum run.
    /// Returns true when the caller must start that thread (counted already).
    ///
    /// A job that enqueues another (an actor hop, a continuation resumed) is about to end, most
    /// of the time, and its thread takes the new job next: no thread is made for that
    /// (`fromJobThread`); if more jobs are still waiting when it does, one is made then. Making a
    /// thread per hop made four threads for each of the supervisor's liveness checks.
    private func arrangeService(fromJobThread: Bool = false) -> Bool {
        guard readyHead < ready.count else { return false }
        if idleThreads > wakeupsPending {
            wakeupsPending += 1
            condition.signal()
            return false
        }
        guard !fromJobThread, threads < maximumThreads else { return false }
        threads += 1
        mostThreads = max(mostThreads, threads)
        return true
    }

    /// Runs `body` as the first task, on a job thread or (hosted) on the watcher's thread, never
    /// on the calling thread itself before it serves the watcher. Job threads end when idle, and
    /// glibc gives their stacks back (workers run with its stack cache off: WorkerEnvironment in
    /// the supervisor).
    func start(_ body: @escaping @Sendable () async -> Void) {
        Task.detached { await body() }
    }

    // MARK: Threads

    private func startThread() {
        do {
            try OSThread.detach { [self] in serve() }
        } catch {
            condition.lock()
            threads -= 1
            let none = threads == 0
            condition.unlock()
            // Without any thread the job would never run; with one, it waits its turn.
            if none { fatalError("QuietExecutor: cannot start a thread: \(error)") }
        }
    }

    /// The next job to run, the due timers moved to the ready ones first (the lock held).
    private func nextJob(now: UInt64) -> UnownedJob? {
        while let due = timers.popDue(now: now) { ready.append(due) }
        guard readyHead < ready.count else { return nil }
        let job = ready[readyHead]
        readyHead += 1
        if readyHead == ready.count {
            ready.removeAll(keepingCapacity: ready.capacity <= 64)
            readyHead = 0
        }
        return job
    }

    /// One thread's life: run what is ready or due, wait otherwise, and end after
    /// ``idleThreadLifetime`` without work, unless no other idle thread is left to wait for a
    /// pending sleep. A thread that takes a job while others still wait first arranges for them
    /// (``arrangeService()``): the job it runs may block for long.
    private func serve() {
        let me = pthread_self()
        condition.lock()
        jobThreads.append(me)
        var idleSince: UInt64?
        while true {
            let now = MonotonicClock.now
            if let job = nextJob(now: now) {
                let start = arrangeService()
                idleSince = nil
                condition.unlock()
                if start { startThread() }
                job.runSynchronously(on: asUnownedTaskExecutor())
                condition.lock()
                continue
            }
            let end = (idleSince ?? now) &+ Self.nanoseconds(of: idleThreadLifetime)
            let anotherWatcher = idleThreads > wakeupsPending
            if now >= end, timers.earliest == nil || anotherWatcher {
                threads -= 1
                jobThreads.removeAll { $0 == me }
                condition.unlock()
                return
            }
            if idleSince == nil { idleSince = now }
            // Past `end` only a pending sleep keeps this thread (the test above), so it wakes for it.
            let wakeAt = now < end ? min(end, timers.earliest ?? end) : timers.earliest ?? end
            idleThreads += 1
            condition.wait(until: wakeAt)
            idleThreads -= 1
            if wakeupsPending > 0 { wakeupsPending -= 1 }
        }
    }

    // MARK: Hosted by the descriptor watcher

    /// Makes the jobs run on the thread that will serve the descriptor watcher
    /// (``DescriptorWatcher/serveOnCallingThread(hosting:after:)``), before the first job: the
    /// executor then starts no thread (why: the type's comment).
    func hostedByWatcher() -> any DescriptorWatcher.Guest {
        condition.lock()
        if host == nil { host = Host() }
        condition.unlock()
        return HostedJobs(executor: self)
    }

    /// The host's wake-up when it waits and `caller` is another thread (the lock held); nil
    /// when the host will see the new work anyway.
    private func wakeHost(caller: pthread_t) -> (@Sendable () -> Void)? {
        guard var current = host, current.waiting, current.thread.map({ pthread_equal($0, caller) == 0 }) ?? true
        else { return nil }
        current.waiting = false
        host = current
        return current.wake
    }

    fileprivate func attachHost(wake: @escaping @Sendable () -> Void) {
        condition.lock()
        host = Host(thread: pthread_self(), wake: wake, waiting: false)
        condition.unlock()
    }

    /// Runs up to ``jobsPerTurn`` ready or due jobs on the host's thread; returns how long the
    /// host may then wait (0 after a full turn: the events first, then the rest).
    fileprivate func runHostedJobs() -> UInt64? {
        condition.lock()
        host?.waiting = false
        var ran = 0
        while true {
            let now = MonotonicClock.now
            if ran == Self.jobsPerTurn {
                condition.unlock()
                return 0
            }
            if let job = nextJob(now: now) {
                condition.unlock()
                job.runSynchronously(on: asUnownedTaskExecutor())
                ran += 1
                condition.lock()
                continue
            }
            host?.waiting = true
            let wait = timers.earliest.map { $0 > now ? $0 - now : 0 }
            condition.unlock()
            return wait
        }
    }

    // MARK: Installing

    /// Makes ``shared`` the global executor of this process: call it before the first task.
    static func installAsGlobal() {
        let enqueue: @convention(thin) (UnownedJob, OriginalEnqueue) -> Void = { job, _ in
            QuietExecutor.shared.push(job)
        }
        let withDelay: @convention(thin) (UInt64, UnownedJob, OriginalDelay) -> Void = { delay, job, _ in
            QuietExecutor.shared.schedule(job, in: delay)
        }
        let withDeadline: @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob, OriginalDeadline) -> Void =
            {
                seconds, nanoseconds, _, _, clock, job, _ in
                // The runtime's clock 1 is the continuous clock (CLOCK_BOOTTIME on Linux), 2 the
                // suspending one (CLOCK_MONOTONIC); the deadline is on that clock.
                let now = MonotonicClock.reading(clock == 1 ? CLOCK_BOOTTIME : CLOCK_MONOTONIC)
                let due = UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, nanoseconds))
                QuietExecutor.shared.schedule(job, in: due > now ? due - now : 0)
            }
        clinux_install_global_executor_hooks(
            unsafeBitCast(enqueue, to: UnsafeMutableRawPointer.self),
            unsafeBitCast(withDelay, to: UnsafeMutableRawPointer.self),
            unsafeBitCast(withDeadline, to: UnsafeMutableRawPointer.self))
    }

    private typealias OriginalEnqueue = @convention(thin) (UnownedJob) -> Void
    private typealias OriginalDelay = @convention(thin) (UInt64, UnownedJob) -> Void
    private typealias OriginalDeadline = @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob) -> Void

    // MARK: Time

    /// Whole nanoseconds of a clock's duration, 0 for a negative one; a clock whose durations are
    /// not `Duration` runs its jobs at once.
    static func nanoseconds<D: DurationProtocol>(of duration: D) -> UInt64 {
        guard let duration = duration as? Duration else { return 0 }
        return UInt64(max(0, duration.nanoseconds))
    }

    private static func activeProcessors() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

/// The worker's way to ``QuietExecutor`` (internal, because its conformance to the scheduling
/// protocol that `Task.sleep` looks for is still SPI in Swift 6.3).
public enum QuietGlobalExecutor {
    /// Makes the quiet executor the global one; call it before the first task.
    public static func install() { QuietExecutor.installAsGlobal() }

    /// Runs `body` as the first task; the caller then gives its thread to something else.
    public static func start(_ body: @escaping @Sendable () async -> Void) {
        QuietExecutor.shared.start(body)
    }

    /// Makes the thread that serves the descriptor watcher run every job (call before the first
    /// task; hand the result to ``DescriptorWatcher/serveOnCallingThread(hosting:after:)``).
    public static func hostedByWatcher() -> any DescriptorWatcher.Guest {
        QuietExecutor.shared.hostedByWatcher()
    }
}

/// The descriptor watcher's side of a hosted ``QuietExecutor``.
private final class HostedJobs: DescriptorWatcher.Guest {
    let executor: QuietExecutor
    init(executor: QuietExecutor) { self.executor = executor }
    func attach(wake: @escaping @Sendable () -> Void) { executor.attachHost(wake: wake) }
    func runReady() -> UInt64? { executor.runHostedJobs() }
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
