/// When to try again after a child (a plug, a switch, a worker) exited or could not be started:
/// at once the first time, then after delays that double up to a cap.
///
/// Only a run that lasted `stableAfter`, measured from a successful start (``started(now:)``) to
/// the exit that follows it, counts as healthy and resets the delays. Failed attempts never do:
/// a start is consulted once, by the next ``nextDelay(now:)``, and then forgotten, so a child that
/// once ran for an hour and now cannot come back is retried with growing delays, not in a loop.
public struct RestartBackoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration
    public var stableAfter: Duration
    /// Attempts since the child last ran stably.
    public private(set) var attempts = 0
    private var runningSince: ContinuousClock.Instant?

    public init(
        initial: Duration = .milliseconds(250), maximum: Duration = .seconds(30), stableAfter: Duration = .seconds(10)
    ) {
        self.initial = initial
        self.maximum = maximum
        self.stableAfter = stableAfter
    }

    /// A network's worker: 60 s of running make it healthy again.
    public static var worker: RestartBackoff { RestartBackoff(stableAfter: .seconds(60)) }
    /// A plug or switch inside a worker: 10 s.
    public static var child: RestartBackoff { RestartBackoff(stableAfter: .seconds(10)) }

    /// The delay before the next attempt, given that the child exited, or the last attempt
    /// failed, at `now`.
    public mutating func nextDelay(now: ContinuousClock.Instant = .now) -> Duration {
        if let runningSince, now - runningSince >= stableAfter { attempts = 0 }
        runningSince = nil
        defer { attempts += 1 }
        guard attempts > 0 else { return .zero }
        var delay = initial
        for _ in 1..<attempts {
            delay = delay * 2
            if delay >= maximum { return maximum }
        }
        return min(delay, maximum)
    }

    /// Records a successful (re)start at `now`.
    public mutating func started(now: ContinuousClock.Instant = .now) {
        runningSince = now
    }
}
