/// When to restart a child that exited: at once the first time, then after delays that double
/// up to a cap. A child that ran for `stableAfter` before exiting counts as healthy again, so a
/// rare crash is always restarted at once while a crash loop slows down.
struct RestartBackoff: Sendable, Equatable {
    var initial: Duration = .milliseconds(250)
    var maximum: Duration = .seconds(30)
    var stableAfter: Duration = .seconds(10)
    /// Restarts since the child last ran stably.
    private(set) var attempts = 0
    private var lastStart: ContinuousClock.Instant?

    init(initial: Duration = .milliseconds(250), maximum: Duration = .seconds(30), stableAfter: Duration = .seconds(10)) {
        self.initial = initial
        self.maximum = maximum
        self.stableAfter = stableAfter
    }

    /// The delay before the next restart, given that the child exited at `now`.
    mutating func nextDelay(now: ContinuousClock.Instant = .now) -> Duration {
        if let lastStart, now - lastStart >= stableAfter { attempts = 0 }
        // A start counts once: failed restarts that follow it do not reset the count again.
        lastStart = nil
        defer { attempts += 1 }
        guard attempts > 0 else { return .zero }
        var delay = initial
        for _ in 1..<attempts {
            delay = delay * 2
            if delay >= maximum { return maximum }
        }
        return min(delay, maximum)
    }

    /// Records that the child was (re)started at `now`.
    mutating func started(now: ContinuousClock.Instant = .now) {
        lastStart = now
    }
}
