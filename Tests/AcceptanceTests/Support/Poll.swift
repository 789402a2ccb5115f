/// Waits for a condition by checking it repeatedly until a deadline: the only way these
/// tests wait for anything (no fixed sleeps as synchronisation).
enum Poll {
    /// Checks `condition` every `interval` until it returns true; throws when `deadline` passes.
    /// `what` names the condition in the failure message.
    static func until(
        _ what: String,
        deadline: Duration = .seconds(10),
        every interval: Duration = .milliseconds(100),
        _ condition: () async throws -> Bool
    ) async throws {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        while true {
            if try await condition() { return }
            if clock.now >= end {
                throw AcceptanceFailure("timed out after \(deadline) waiting for: \(what)")
            }
            try await Task.sleep(for: interval)
        }
    }

    /// Like ``until(_:deadline:every:_:)``, returning the first non-nil value of `probe`.
    static func value<T>(
        _ what: String,
        deadline: Duration = .seconds(10),
        every interval: Duration = .milliseconds(100),
        _ probe: () async throws -> T?
    ) async throws -> T {
        var found: T?
        try await until(what, deadline: deadline, every: interval) {
            found = try await probe()
            return found != nil
        }
        guard let found else { throw AcceptanceFailure("\(what): found, then lost") }
        return found
    }
}
