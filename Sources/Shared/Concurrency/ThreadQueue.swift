/// Runs closures one at a time, in the order they were queued, on one thread of its own that
/// sleeps without a timeout while the queue is empty: for blocking writes that must keep their
/// order and must not hold an executor thread (the worker's lines to its supervisor).
///
/// Why not a serial Dispatch queue: an idle Dispatch thread ends after 5 s, so a worker answering
/// the supervisor's liveness check every few seconds made and ended a thread for each reply
/// (strace of an idle worker: clone3, set_robust_list, madvise, exit per check).
/// The thread starts with the first closure and ends after ``finish()``.
public final class ThreadQueue: @unchecked Sendable {
    private let condition = ConditionLock()
    /// Guarded by `condition`.
    private var pending: [@Sendable () -> Void] = []
    private var started = false
    private var finishing = false

    public init() {}

    /// Queues `work`; it runs after everything queued before it. After ``finish()`` it is
    /// dropped, and the result is false.
    /// When no thread can be made, `work` runs on the caller's thread (in order: nothing else
    /// can be queued ahead of it, because the queue has no thread yet).
    @discardableResult
    public func async(_ work: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        guard !finishing else {
            condition.unlock()
            return false
        }
        pending.append(work)
        let start = !started
        started = true
        condition.signal()
        condition.unlock()
        guard start else { return true }
        do {
            try OSThread.detach { [self] in serve() }
        } catch {
            condition.lock()
            started = false
            let now = pending
            pending.removeAll()
            condition.unlock()
            for work in now { work() }
        }
        return true
    }

    /// Lets the thread end once what is queued has run; later closures are dropped.
    public func finish() {
        condition.lock()
        finishing = true
        condition.signal()
        condition.unlock()
    }

    private func serve() {
        condition.lock()
        while true {
            if pending.isEmpty {
                if finishing { break }
                condition.wait()
                continue
            }
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            condition.unlock()
            for work in batch { work() }
            condition.lock()
        }
        condition.unlock()
    }
}
