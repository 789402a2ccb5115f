import Shared
import Testing

@Suite struct RestartBackoffTests {
    @Test func firstRestartAtOnceThenDoublingUpToTheCap() {
        var backoff = RestartBackoff(initial: .milliseconds(250), maximum: .seconds(2), stableAfter: .seconds(10))
        let now = ContinuousClock.now
        let delays = (0..<7).map { _ in backoff.nextDelay(now: now) }
        #expect(
            delays == [
                .zero, .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(2), .seconds(2),
            ])
    }

    @Test func aStableRunResetsTheBackoff() {
        var backoff = RestartBackoff(initial: .milliseconds(250), maximum: .seconds(2), stableAfter: .seconds(10))
        let start = ContinuousClock.now
        _ = backoff.nextDelay(now: start)
        _ = backoff.nextDelay(now: start)
        backoff.started(now: start)
        #expect(backoff.nextDelay(now: start + .seconds(11)) == .zero)
        #expect(backoff.nextDelay(now: start + .seconds(11)) == .milliseconds(250))
    }

    /// The bug of the supervisor's old backoff: after one long run, every failed attempt
    /// measured "ran for" from that run's start, and each retry came at once, forever.
    @Test func failedAttemptsAfterALongRunDoNotResetTheDelays() {
        var backoff = RestartBackoff(initial: .milliseconds(250), maximum: .seconds(30), stableAfter: .seconds(60))
        let start = ContinuousClock.now
        backoff.started(now: start)
        let later = start + .seconds(3600)
        let delays = (0..<4).map { i in backoff.nextDelay(now: later + .seconds(i)) }
        #expect(delays == [.zero, .milliseconds(250), .milliseconds(500), .seconds(1)])
    }
}
