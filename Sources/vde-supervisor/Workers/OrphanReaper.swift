import CLinux
import Glibc
import Logging
import ServiceLifecycle
import Shared

/// Keeps every process the supervisor started in its process tree.
///
/// The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): what a dead worker leaves
/// behind (a switch or plug on its way out) is re-parented to the supervisor rather than to
/// init, so an operator sees it under the service and systemd's cgroup keeps it. Such adopted
/// children are not swift-subprocess's to reap, so this service reaps them: a child that has
/// been a zombie for two consecutive scans is an orphan (swift-subprocess reaps its own
/// workers at once through their pidfd).
struct OrphanReaper: Service, CustomStringConvertible {
    let logger: Logger
    var interval: Duration = .seconds(1)

    var description: String { "OrphanReaper" }

    /// Makes this process a child subreaper. Call before starting any worker.
    static func becomeSubreaper() -> Bool {
        clinux_set_child_subreaper() == 0
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await reapLoop() }
    }

    private func reapLoop() async {
        var seenZombies: Set<Int32> = []
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            let zombies = Set(Self.zombieChildren(of: getpid()))
            for pid in zombies.intersection(seenZombies) {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    logger.info("reaped an orphaned child", metadata: ["pid": "\(pid)", "status": "\(status)"])
                }
            }
            seenZombies = zombies
        }
    }

    /// Zombie children of this process (``ProcFS/children(of:)`` whose state is `Z`).
    static func zombieChildren(of parent: Int32) -> [Int32] {
        ProcFS.children(of: parent).filter { pid in
            guard let stat = ProcFS.stat(of: pid) else { return false }
            return stat.state == "Z" && stat.parent == parent
        }
    }
}
