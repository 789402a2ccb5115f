import Glibc
import Logging
import Synchronization
import Testing

@testable import vde_supervisor

@Suite struct OrphanReaperTests {
    /// The scan finds a zombie child without reaping it, and forgets it once it is reaped.
    @Test(.timeLimit(.minutes(1))) func aZombieChildIsFoundAndLeftForTheReaper() async throws {
        var pid: pid_t = 0
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { for argument in argv { free(argument) } }
        try #require(posix_spawn(&pid, "/bin/true", nil, nil, &argv, environ) == 0)
        while !OrphanReaper.zombieChildren().contains(pid) {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(OrphanReaper.zombieChildren().contains(pid), "found twice: the scan did not reap it")
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(!OrphanReaper.zombieChildren().contains(pid))
    }

    /// A child nobody waits for (as an orphan re-parented to the supervisor is) is reaped after
    /// its SIGCHLD, without a periodic scan: the reaper wakes on the signal.
    @Test(.timeLimit(.minutes(1))) func aChildNobodyWaitsForIsReapedAfterItsSignal() async throws {
        // Only this test's children: the test process runs other suites' children too.
        let ours = Mutex<Set<pid_t>>([])
        let reaper = OrphanReaper(
            logger: Logger(label: "test"), settle: .milliseconds(100),
            mayReap: { pid in ours.withLock { $0.contains(pid) } })
        let running = Task { try await reaper.run() }
        defer { running.cancel() }
        // The reaper registers its signal source when it starts; a child that exits before
        // that only leaves a zombie, so keep making children until one is reaped.
        var pid: pid_t = 0
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { for argument in argv { free(argument) } }
        #expect(posix_spawn(&pid, "/bin/true", nil, nil, &argv, environ) == 0)
        ours.withLock { _ = $0.insert(pid) }
        var reaped = false
        while !reaped {
            // A reaped child is gone from /proc; an unreaped one stays there as a zombie.
            if access("/proc/\(pid)", F_OK) != 0 {
                reaped = true
            } else {
                try await Task.sleep(for: .milliseconds(20))
                if OrphanReaper.zombieChildren().contains(pid) {
                    // Still a zombie: another child's exit signals the reaper again.
                    var another: pid_t = 0
                    #expect(posix_spawn(&another, "/bin/true", nil, nil, &argv, environ) == 0)
                    ours.withLock { _ = $0.insert(another) }
                }
            }
        }
        #expect(reaped)
    }
}
