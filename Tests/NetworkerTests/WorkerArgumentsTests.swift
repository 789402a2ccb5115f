import Shared
import Testing

@testable import vde_networker

@Suite struct WorkerArgumentsTests {
    let id = String(repeating: "ab", count: 32)

    @Test func theSupervisorsCommandLineIsRead() throws {
        let request = try WorkerArguments.parse(["--network-id", id, "--log-level", "debug", "--run-dir", "/run/x"])
        #expect(request == .serve(WorkerArguments(networkID: try NetworkID(id), logLevel: .debug)))
    }

    @Test func valuesMayFollowAnEqualsSignAndTheLevelDefaultsToInfo() throws {
        let request = try WorkerArguments.parse(["--network-id=\(id)"])
        #expect(request == .serve(WorkerArguments(networkID: try NetworkID(id), logLevel: .info)))
    }

    @Test func theForkServersCommandLineIsReadAndAForkedWorkersMarkIgnored() throws {
        let server = ForkServerProtocol.serverArguments(
            executable: "/x/vde-networker", logLevel: "debug", runDir: "/run/x")
        #expect(try WorkerArguments.parse(Array(server.dropFirst())) == .forkServer(logLevel: .debug, runDir: "/run/x"))
        let worker = ForkServerProtocol.workerArguments(
            executable: "/x/vde-networker", networkID: try NetworkID(id), logLevel: "info", runDir: "/run/x",
            forked: true)
        #expect(
            try WorkerArguments.parse(Array(worker.dropFirst()))
                == .serve(WorkerArguments(networkID: try NetworkID(id), logLevel: .info)))
    }

    @Test func helpAndVersionWinOverEverythingElse() throws {
        #expect(try WorkerArguments.parse(["--help"]) == .help)
        #expect(try WorkerArguments.parse(["--network-id", id, "-h"]) == .help)
        #expect(try WorkerArguments.parse(["--version", "--bogus"]) == .version)
    }

    @Test(arguments: [
        (["--log-level", "info"], "--network-id is required"),
        (["--network-id"], "--network-id needs a value"),
        (["--network-id", "../etc"], "--network-id:"),
        (["--network-id", "ab", "--log-level", "loud"], "--log-level must be one of"),
        (["--network-id", "ab", "--run-dir", "run"], "--run-dir must be an absolute path"),
        (["--network-id", "ab", "extra"], "unknown argument \"extra\""),
        (["--network-id", "ab; rm -rf /"], "--network-id:"),
        (["--fork-server"], "--fork-server needs --run-dir"),
        (["--fork-server", "--run-dir", "/run/x", "--network-id", "ab"], "--fork-server serves many networks"),
        (["--fork-server=yes", "--run-dir", "/run/x"], "unknown argument \"--fork-server=yes\""),
        (["--fork-spare", "--run-dir", "/run/x"], "--fork-spare marks a fork server's spare worker"),
    ])
    func aBadCommandLineIsRefusedWithTheOptionNamed(arguments: [String], message: String) {
        #expect {
            _ = try WorkerArguments.parse(arguments)
        } throws: { error in
            (error as? WorkerArguments.UsageError)?.message.hasPrefix(message) == true
        }
    }
}
