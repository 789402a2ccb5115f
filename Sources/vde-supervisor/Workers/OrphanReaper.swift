import CLinux
import Dispatch
import Glibc
import Logging
import ServiceLifecycle
import Shared

/// Keeps every process the supervisor started in its process tree.
///
/// Workers are not its business: ``ChildSpawn`` started them and their ``WorkerLink`` reaps
/// them through their pidfd (``ChildSpawn/willBeReapedByItsStarter(_:)``).
///
/// The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): what a dead worker leaves
/// behind (a switch or plug on its way out) is re-parented to the supervisor rather than to
/// init, so an operator sees it under the service and systemd's cgroup keeps it. Such adopted
/// children are not swift-subprocess's to reap, so this service reaps them: a child that is
/// still a zombie one `settle` interval after a scan found it is an orphan (swift-subprocess
/// reaps its own workers at once through their pidfd, well within that interval).
///
/// Scans run only after a `SIGCHLD` (the kernel sends one for adopted children too), and
/// again every `settle` only while a zombie waits: an idle supervisor does not wake up for
/// this. The earlier scan every second read `/proc/PID/stat` of every worker and was 18 % of
/// an idle supervisor's CPU at 100 networks (perf, bench helper's profile of 16bac3c).
///
/// A scan first asks the kernel whether any child is a zombie at all (one `waitid` with
/// `WNOWAIT`), and then asks it child by child, never reading `/proc/PID/stat`: the supervisor's
/// children are every worker and every switch (a daemon is re-parented to it), and at 1000
/// networks reading and parsing 2000 stat files after each worker's or switch's exit was 13 %
/// of the supervisor's CPU under a stream of network creates and deletes (perf, sizecost).
struct OrphanReaper: Service, CustomStringConvertible {
    let logger: Logger
    var settle: Duration = .seconds(1)
    /// Which zombie children this reaper may reap: by default every one that no starter will
    /// reap. A test narrows it to its own children: the test process also runs acceptance
    /// tests whose swift-subprocess children must not be reaped under them (CI's run of
    /// 3dd9468 lost one so: `waitpid` failed with ECHILD).
    var mayReap: @Sendable (pid_t) -> Bool = { !ChildSpawn.willBeReapedByItsStarter($0) }

    var description: String { "OrphanReaper" }

    /// Makes this process a child subreaper. Call before starting any worker.
    static func becomeSubreaper() -> Bool {
        clinux_set_child_subreaper() == 0
    }

    func run() async throws {
        let (childExits, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        // Dispatch installs its own handler for the signal; the disposition must not be
        // SIG_IGN, which would make the kernel reap every child, swift-subprocess's too.
        let source = DispatchSource.makeSignalSource(signal: SIGCHLD, queue: .global())
        source.setEventHandler { continuation.yield() }
        source.resume()
        defer { source.cancel() }
        await cancelWhenGracefulShutdown { await reapLoop(childExits) }
    }

    private func reapLoop(_ childExits: AsyncStream<Void>) async {
        var iterator = childExits.makeAsyncIterator()
        while await iterator.next() != nil {
            // A zombie is reaped only when a later scan still finds it: a worker's starter has
            // reaped it through its pidfd by then. While any zombie is left, look again after `settle`.
            var seenZombies = Set(Self.zombieChildren())
            while !seenZombies.isEmpty {
                do { try await Task.sleep(for: settle) } catch { return }
                let zombies = Set(Self.zombieChildren())
                for pid in zombies.intersection(seenZombies) where mayReap(pid) {
                    var status: Int32 = 0
                    if waitpid(pid, &status, WNOHANG) == pid {
                        logger.info("reaped an orphaned child", metadata: ["pid": "\(pid)", "status": "\(status)"])
                    }
                }
                seenZombies = zombies.subtracting(seenZombies)
            }
        }
    }

    /// Zombie children of this process, none of them reaped: [] at once when the kernel knows
    /// of none, else each of ``ProcFS/children(of:)`` that the kernel reports as exited.
    static func zombieChildren() -> [Int32] {
        guard clinux_peek_zombie_child(0) > 0 else { return [] }
        return ProcFS.children(of: getpid()).filter { clinux_peek_zombie_child($0) == $0 }
    }
}
