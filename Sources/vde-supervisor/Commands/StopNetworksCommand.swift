import ArgumentParser
import Glibc
import Logging
import Shared

/// `vde-supervisor stop-networks`: stops the data path of every recorded network (each worker
/// with its switch and plugs) while the supervisor is stopped. The state is kept: Docker still
/// knows the networks, and a supervisor started later brings them back.
///
/// Since a supervisor's SIGTERM leaves its workers running (docs/recovery.md), this is what
/// `scripts/uninstall`, a package purge and the tests' cleanup call. It takes the state dir's
/// lock (so it refuses while a supervisor runs) and goes the one way a network comes up: a
/// running worker is adopted, otherwise one is spawned (which adopts the switch and plugs); then
/// each gets `shutdown`, which stops everything and removes what the worker made.
struct StopNetworksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop-networks",
        abstract: "Stop every network's worker, switch and plugs (with the supervisor stopped); the state is kept.")

    @OptionGroup var store: NetworkStoreOptions

    @Option(help: "trace, debug, info, warning or error.")
    var logLevel: Logger.Level = .notice

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        VDELogHandler.bootstrap(level: logLevel)
        let logger = Logger(label: "vde-supervisor stop-networks")
        let stateDir = store.stateDir
        let configuration = SupervisorConfiguration(
            stateDir: stateDir, runDir: store.runDir, networkerPath: try store.networkerPath(), logLevel: logLevel)
        let stateLock: StateDirLock
        do {
            stateLock = try StateDirLock.acquire(stateDir: stateDir)
        } catch {
            StatusCommand.printError(
                "vde-supervisor stop-networks: \(VDEError(wrapping: error).message)\n"
                    + "Stop the supervisor first (systemctl stop vde-supervisor); its workers keep running until this command stops them."
            )
            throw ExitCode.failure
        }
        defer { withExtendedLifetime(stateLock) {} }
        let plugin: VDEPlugin
        do {
            plugin = try VDEPlugin(configuration: configuration, logger: logger)
        } catch {
            StatusCommand.printError(
                "vde-supervisor stop-networks: cannot load the state: \(VDEError(wrapping: error).message)")
            throw ExitCode.failure
        }
        let count = await plugin.state.networks.count
        await plugin.restoreNetworks()
        await plugin.stopAllWorkers()
        StatusCommand.write("stopped \(count) network(s); the state in \(stateDir) is kept\n", to: 1)
    }
}
