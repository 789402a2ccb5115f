/// Lets one operation at a time change an actor's state, in arrival order, across the awaits
/// inside it (actor isolation alone ends at each await). Kept inside the actor: the worker's
/// state-changing requests (read-only `ping` and `status` do not pass, so they answer while a
/// slow operation runs), the supervisor's `link` changes (so a worker gets them in the order
/// they were recorded).
public struct SerialGate: Sendable {
    public init() {}

    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// True when the caller got the gate at once; otherwise it must wait with ``enqueue(_:)``.
    public mutating func tryAcquire() -> Bool {
        guard !busy else { return false }
        busy = true
        return true
    }

    /// Queues a waiter; ``release()`` hands the gate over to it.
    public mutating func enqueue(_ waiter: CheckedContinuation<Void, Never>) {
        waiters.append(waiter)
    }

    public mutating func release() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }
}
