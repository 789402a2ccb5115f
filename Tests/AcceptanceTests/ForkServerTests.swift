import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// The worker fork server (docs/worker-protocol.md, "The fork server") with a real
    /// supervisor: workers are forked, yet each is the supervisor's child in a process group of
    /// its own and shows its own command line (which adoption checks); a fork server that dies
    /// takes nothing with it and is replaced with the next worker.
    @Suite(.timeLimit(.minutes(5)))
    struct ForkServer {
        static func forkServers(in table: [Int32: RecoveryProcess]) -> [RecoveryProcess] {
            table.values.filter { !$0.isZombie && $0.program == "vde-networker" && $0.argv.contains("--fork-server") }
        }

        /// The command line without the NUL padding a forked worker leaves after its own.
        static func shownArguments(_ process: RecoveryProcess) -> [String] {
            var argv = process.argv
            while argv.last == "" { argv.removeLast() }
            return argv
        }

        @Test func workersAreForkedAsTheSupervisorsChildrenWithTheirOwnCommandLine() async throws {
            try await Acceptance.Recovery.withLab { lab in
                let root = lab.host.supervisorPID
                let networker = try Binaries.networker
                let table = RecoveryProcess.all()
                let servers = Self.forkServers(in: table)
                #expect(servers.count == 1, "one fork server should run: \(servers)")
                #expect(
                    servers.allSatisfy { $0.parent == root }, "the fork server is the supervisor's child: \(servers)")
                for network in lab.networks {
                    let pid = try #require(lab.running(network).workers.first)
                    let worker = try #require(table[pid])
                    let argv = Self.shownArguments(worker)
                    #expect(
                        Array(argv.prefix(3)) == [networker, "--network-id", network.id]
                            && argv.last == "--fork-worker",
                        "a forked worker shows its own command line: \(argv)")
                    #expect(
                        zip(argv, argv.dropFirst()).contains { $0 == ("--run-dir", lab.host.runDir) },
                        "its run dir is the supervisor's: \(argv)")
                    #expect(worker.parent == root, "worker \(pid) is the supervisor's child: \(worker)")
                    #expect(getpgid(pid) == pid, "worker \(pid) leads a process group of its own")
                }

                // The fork server dies: nothing else does; the next worker comes from a new one.
                let server = try #require(servers.first)
                kill(server.pid, SIGKILL)
                let before = lab.running(lab.a)
                let victim = try #require(before.workers.first)
                kill(victim, SIGKILL)
                try await lab.waitForConnectivity(lab.a, deadline: .seconds(10))
                try await lab.waitUntilConsistent(
                    "A's worker back after kill -9 of it and of the fork server", killed: [victim, server.pid])
                let after = RecoveryProcess.all()
                let replacement = try #require(lab.running(lab.a, in: after).workers.first)
                #expect(
                    Self.shownArguments(try #require(after[replacement])).last == "--fork-worker",
                    "the new worker was forked too")
                let newServers = Self.forkServers(in: after)
                #expect(
                    newServers.count == 1 && newServers.first?.pid != server.pid && newServers.first?.parent == root,
                    "a new fork server runs: \(newServers)")
                #expect(lab.running(lab.b, in: after).workers == lab.running(lab.b, in: table).workers)
            }
        }
    }
}
