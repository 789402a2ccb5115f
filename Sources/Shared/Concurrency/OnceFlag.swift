import Synchronization

/// A flag that can be claimed once, from any thread: for "resume this continuation once" and
/// "close this descriptor once" when two paths race to do it.
public final class OnceFlag: Sendable {
    private let claimed = Mutex(false)

    public init() {}

    /// True for the first caller only.
    public func claim() -> Bool {
        claimed.withLock { done in
            defer { done = true }
            return !done
        }
    }
}
