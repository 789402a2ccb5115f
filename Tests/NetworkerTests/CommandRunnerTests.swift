import Logging
import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// ``CommandRunner`` on real short processes (`/bin/sh -c` with a fixed script, no user input).
@Suite struct CommandRunnerTests {
    let runner = CommandRunner(logger: Logger(label: "command-runner-test"))

    @Test func outputErrorsAndStatusAreCaptured() async throws {
        let result = try await runner.run(["/bin/sh", "-c", "echo one; echo two; echo oops >&2; exit 3"])
        #expect(result.standardOutput == "one\ntwo\n")
        #expect(result.standardError == "oops\n")
        #expect(result.status == .exited(3))
        #expect(!result.succeeded)
        #expect(result.failureSummary == "oops")
    }

    @Test func checkNamesTheCommandAndItsFirstErrorLine() async throws {
        await #expect {
            try await runner.check(["/bin/sh", "-c", "echo first >&2; echo second >&2; exit 1"])
        } throws: { error in
            (error as? CommandError)?.description == "/bin/sh -c echo first >&2; echo second >&2; exit 1: first"
        }
        let quiet = try await runner.run(["/bin/sh", "-c", "kill -9 $$"])
        #expect(quiet.status == .signaled(SIGKILL))
        #expect(quiet.failureSummary == "killed by signal 9")
    }

    @Test func aMissingProgramIsReportedAsSuch() async {
        await #expect {
            try await runner.run(["/nonexistent/ip", "link"])
        } throws: { error in
            (error as? CommandError)?.reason == "no such program"
        }
    }

    /// A command past its limit is killed with everything it started (its process group), so
    /// that no grandchild keeps the pipes open or lives on.
    @Test func aCommandPastItsLimitIsKilledWithItsGroup() async throws {
        var short = runner
        short.timeout = .milliseconds(300)
        // Durations no other process uses, to find them after.
        let first = "\(3000 + getpid() % 1000)"
        let second = "\(5000 + getpid() % 1000)"
        await #expect {
            try await short.run(["/bin/sh", "-c", "sleep \(first) & exec sleep \(second)"])
        } throws: { error in
            (error as? CommandError)?.reason == "did not finish within 300 ms"
        }
        // Both sleeps were in the group: none is left running (zombies have no arguments).
        let left = (FileSystem.listDirectory("/proc") ?? []).compactMap { pid_t($0) }.filter { pid in
            let arguments = ProcFS.arguments(of: pid) ?? []
            return arguments == ["sleep", first] || arguments == ["sleep", second]
        }
        #expect(left.isEmpty, "left running: \(left)")
    }
}
