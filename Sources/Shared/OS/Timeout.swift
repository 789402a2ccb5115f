/// The one way to bound how long something may take: races `operation` against a timer in a task
/// group, and cancels the loser. Replaces the hand-made races (a task group with a sleeping
/// child, or a timer task that resumes a stored continuation).
///
/// The call returns once `operation` has ended: it must end when cancelled (Task.sleep, pidfd
/// waits, swift-subprocess runs, AsyncStream iteration all do; `await someTask.value` does not:
/// wrap what it waits for instead). Blocking calls that cannot be cancelled go through
/// `Blocking.run(timeout:_:)`, which leaves them behind on their own thread.
public enum Timeout {
    /// The result of `operation`, or nil when `timeout` passed first (or the calling task was cancelled).
    public static func run<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async -> T) async -> T?
    {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { await operation() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            return await group.next() ?? nil
        }
    }

    /// The result of `operation`, or nil when `timeout` passed first; an error of `operation`
    /// (or the calling task's cancellation) is thrown.
    public static func run<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T)
        async throws -> T?
    {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }

    /// Calls `action` once `timeout` has passed, unless the returned task is cancelled first: the
    /// deadline of something that is not a task of its own (a stored continuation, a list of
    /// waiters), which `action` then resumes. Cancel the task when the wait ends in time.
    @discardableResult
    public static func after(_ timeout: Duration, _ action: @escaping @Sendable () async -> Void) -> Task<Void, Never> {
        Task {
            do { try await Task.sleep(for: timeout) } catch { return }
            await action()
        }
    }
}
