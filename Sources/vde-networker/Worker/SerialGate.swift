/// Lets one operation at a time change the worker's state, in arrival order, across the awaits
/// inside it (actor isolation alone ends at each await). Kept inside the ``Worker`` actor;
/// read-only requests (`ping`, `status`) do not pass through it, so they answer while a slow
/// operation runs.
struct SerialGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// True when the caller got the gate at once; otherwise it must wait with ``enqueue(_:)``.
    mutating func tryAcquire() -> Bool {
        guard !busy else { return false }
        busy = true
        return true
    }

    /// Queues a waiter; ``release()`` hands the gate over to it.
    mutating func enqueue(_ waiter: CheckedContinuation<Void, Never>) {
        waiters.append(waiter)
    }

    mutating func release() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }
}
