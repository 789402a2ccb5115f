import Testing
@testable import vde_supervisor

struct BackoffTests {
    @Test func firstRestartAtOnceThenDoublingUpToTheCap() {
        var backoff = Backoff()
        #expect(backoff.next(ranFor: nil) == .zero)
        #expect(backoff.next(ranFor: .milliseconds(10)) == .milliseconds(250))
        #expect(backoff.next(ranFor: .milliseconds(10)) == .milliseconds(500))
        #expect(backoff.next(ranFor: .milliseconds(10)) == .seconds(1))
        for _ in 0..<20 { _ = backoff.next(ranFor: .milliseconds(10)) }
        #expect(backoff.next(ranFor: .milliseconds(10)) == Backoff.cap)
    }

    @Test func aHealthyRunResetsTheBackoff() {
        var backoff = Backoff()
        for _ in 0..<5 { _ = backoff.next(ranFor: .milliseconds(10)) }
        #expect(backoff.next(ranFor: .seconds(120)) == .zero)
    }
}
