import ArgumentParser
import Glibc
import Logging
import ServiceLifecycle
import Shared

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `vde-supervisor run`: serve the plugin API and keep one worker per network running.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Serve the Docker plugin API (the default subcommand).")

    @Option(help: "The Docker plugin socket.")
    var socket: String = SupervisorConfiguration.defaultSocket

    @Option(help: "Where the state file lives.")
    var stateDir: String = SupervisorConfiguration.defaultStateDir

    @Option(help: "Where networks' own switches put their sockets.")
    var runDir: String = SupervisorConfiguration.defaultRunDir

    @Option(help: "The vde-networker executable (default: next to vde-supervisor).")
    var networker: String?

    @Option(help: "trace, debug, info, warning or error.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        for (flag, path) in [("--socket", socket), ("--state-dir", stateDir), ("--run-dir", runDir)] {
            guard path.hasPrefix("/") else { throw ValidationError("\(flag) must be an absolute path") }
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "vde-supervisor")
        logger.logLevel = level

        let configuration = SupervisorConfiguration(
            socketPath: socket, stateDir: stateDir, runDir: runDir,
            networkerPath: networker ?? Self.siblingExecutable("vde-networker"), logLevel: level)
        guard access(configuration.networkerPath, X_OK) == 0 else {
            throw VDEError.invalid("vde-networker not found or not executable at \(configuration.networkerPath); pass --networker PATH")
        }
        let plugin: VDEPlugin
        do {
            plugin = try VDEPlugin(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot load state", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            throw ExitCode.failure
        }
        await plugin.restoreNetworks()
        let server = PluginServer(socketPath: socket, router: PluginRouter(plugin: plugin, logger: logger), logger: logger)
        let group = ServiceGroup(
            services: [WorkerShutdown(plugin: plugin), server],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        do {
            try await group.run()
        } catch {
            logger.critical("supervisor stopped", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            await plugin.stopAllWorkers()
            throw ExitCode.failure
        }
        logger.info("supervisor stopped")
    }

    /// A file next to this executable (found through /proc/self/exe).
    static func siblingExecutable(_ name: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return "/usr/local/bin/" + name }
        let path = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return directory + "/" + name
    }
}

/// Stops every worker when the supervisor shuts down, after the plugin API has closed.
struct WorkerShutdown: Service {
    let plugin: VDEPlugin

    func run() async throws {
        try? await gracefulShutdown()
        await plugin.stopAllWorkers()
    }
}

extension WorkerShutdown: CustomStringConvertible {
    var description: String { "WorkerShutdown" }
}
