import Glibc
import Testing

extension Acceptance {
    /// The state dir belongs to one supervisor at a time.
    @Suite(.timeLimit(.minutes(3)))
    struct StateDirTests {
        /// A second supervisor on the same state dir (its own sockets, so the socket probe cannot
        /// tell) exits at once with the pid of the first, and leaves the first serving.
        @Test func aSecondSupervisorOnTheSameStateDirExitsNamingTheFirst() async throws {
            try await SupervisorFixture.with { first in
                let dir = first.stateDir.split(separator: "/").dropLast().map { "/" + $0 }.joined()
                let stateBefore = first.stateBytes()
                let second = try await Command.run(
                    [
                        try Binaries.supervisor, "run", "--socket", dir + "/second.sock", "--state-dir", first.stateDir,
                        "--run-dir", dir + "/run-second", "--networker", try Binaries.networker,
                        "--control-socket", dir + "/second-control.sock", "--config", dir + "/absent.conf",
                    ], timeout: .seconds(30))
                #expect(!second.succeeded, "the second supervisor must refuse to run: \(second)")
                #expect(
                    second.output.contains("pid \(first.process.pid)"),
                    "the error should name the first supervisor's pid: \(second)")
                #expect(second.output.contains(first.stateDir), "the error should name the state dir: \(second)")
                #expect(!TempDir.exists(dir + "/second.sock"), "the second supervisor must not serve")
                #expect(first.stateBytes() == stateBefore)
                try await first.assertServes()
            }
        }
    }
}
