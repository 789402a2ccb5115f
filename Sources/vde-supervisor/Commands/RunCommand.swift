import ArgumentParser
import Glibc
import Logging
import ServiceLifecycle
import Shared

// swift-format-ignore: AvoidRetroactiveConformances
// `--log-level` takes swift-log's levels by name; neither package declares this conformance,
// and a wrapper type would only repeat Logger.Level's cases.
extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `vde-supervisor run`: serve the plugin API and keep one worker per network running.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Serve the Docker plugin API (the default subcommand).")

    @Option(help: "The Docker plugin socket.")
    var socket: String = SupervisorConfiguration.defaultSocket

    @Option(help: "The private control socket that `vde-supervisor status` reads (root only).")
    var controlSocket: String = SupervisorConfiguration.defaultControlSocket

    @Option(
        help: ArgumentHelp(
            "dockerd's API socket, asked once after a start which networks still exist ('none' to skip).",
            discussion:
                "Default: /var/run/docker.sock when --socket is under /run/docker/plugins (where dockerd finds plugins), else none."
        ))
    var dockerSocket: String?

    /// Where to ask dockerd, if at all: a supervisor on a private socket serves no dockerd.
    var effectiveDockerSocket: String? {
        switch dockerSocket {
        case "none": nil
        case let path?: path
        case nil:
            socket.hasPrefix("/run/docker/plugins/") || socket.hasPrefix("/var/run/docker/plugins/")
                ? SupervisorConfiguration.defaultDockerSocket : nil
        }
    }

    @OptionGroup var store: NetworkStoreOptions

    @Option(
        help: "trace, debug, info, warning or error (default: $LOG_LEVEL, else info; the config file's log_level wins)."
    )
    var logLevel: Logger.Level?

    @Flag(
        help: ArgumentHelp(
            "At SIGTERM or SIGINT, stop every network's worker, switch and plugs (the state is kept).",
            discussion:
                "For a container (the image's command): stopping a container ends every process in it anyway, which would leave the switches' sockets behind. The next start brings the networks back from the state. Without it the workers keep running for the next supervisor."
        ))
    var stopNetworksOnExit = false

    @Option(help: "Settings re-read on SIGHUP (log_level = ...); a missing file is fine.")
    var config: String = ConfigFile.defaultPath

    func validate() throws {
        _ = try EnvironmentLogLevel.resolve(flag: logLevel)
        for (flag, path) in [("--socket", socket), ("--control-socket", controlSocket)] {
            guard path.hasPrefix("/") else { throw ValidationError("\(flag) must be an absolute path") }
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let startLevel = try EnvironmentLogLevel.resolve(flag: logLevel)
        VDELogHandler.bootstrap(level: startLevel)
        let logger = Logger(label: "vde-supervisor")
        let level: Logger.Level
        do {
            level = try ConfigFile.applyLogLevel(from: config, otherwise: startLevel)
        } catch {
            logger.critical("bad configuration", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            throw ExitCode.failure
        }

        let (stateDir, runDir) = (store.stateDir, store.runDir)
        let configuration = SupervisorConfiguration(
            socketPath: socket, stateDir: stateDir, runDir: runDir, networkerPath: try store.networkerPath(),
            logLevel: level)
        logger.info("starting", metadata: ["socket": "\(socket)", "stateDir": "\(stateDir)", "runDir": "\(runDir)"])
        // Before the state is read: one supervisor per state dir (held until the process exits).
        let stateLock: StateDirLock
        do {
            stateLock = try StateDirLock.acquire(stateDir: stateDir)
        } catch {
            logger.critical("cannot use the state dir", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            throw ExitCode.failure
        }
        defer { withExtendedLifetime(stateLock) {} }
        let plugin: VDEPlugin
        do {
            plugin = try VDEPlugin(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot load state", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            throw ExitCode.failure
        }
        let inherited: Int32?
        do {
            inherited = try Systemd.takeListeningSocket()
        } catch {
            logger.critical("socket activation failed", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            throw ExitCode.failure
        }
        // Refuse before touching any network: a second supervisor would fight over the switches.
        for path in (inherited == nil ? [socket] : []) + [controlSocket] where SocketPath.answers(path) {
            logger.critical("another vde-supervisor already serves \(path); stop it first")
            throw ExitCode.failure
        }
        if !OrphanReaper.becomeSubreaper() {
            logger.warning("could not become a child subreaper; orphans of dead workers go to init")
        }
        // The restore runs beside the control socket, so that `status` answers while 1000
        // networks are adopted (those not yet adopted show as `starting`); the plugin API (and
        // with it systemd's READY=1, which waits for it) and the Docker reconciler start once
        // every network has had its first attempt, as before.
        let restored = Task { await plugin.restoreNetworks() }
        let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
        let router = PluginRouter(plugin: plugin, logger: logger)
        let server = UnixHTTPServer(
            name: "the Docker plugin API", socketPath: socket, inheritedSocket: inherited, mode: 0o660,
            handler: { method, path, body in await router.reply(method: method, path: path, body: body) },
            logger: logger, listening: listeningContinuation)
        let control = UnixHTTPServer(
            name: "the control socket", socketPath: controlSocket, inheritedSocket: nil, mode: 0o600,
            handler: { method, path, body in
                await ControlAPI(plugin: plugin).reply(method: method, path: path, body: body)
            },
            logger: logger, listening: nil)
        let commandLineLevel = startLevel
        let configPath = config
        let systemd = SystemdService(
            plugin: plugin, listening: listening,
            reload: {
                do {
                    let reloaded = try ConfigFile.applyLogLevel(from: configPath, otherwise: commandLineLevel)
                    logger.info("configuration reloaded", metadata: ["logLevel": "\(reloaded)"])
                } catch {
                    logger.error(
                        "configuration not reloaded", metadata: ["error": "\(VDEError(wrapping: error).message)"])
                }
            }, logger: logger)
        let group = ServiceGroup(
            services: [
                OrphanReaper(logger: logger),
                WorkerShutdown(plugin: plugin, stopNetworks: stopNetworksOnExit, restored: restored), control,
                AfterRestore(restored: restored, service: server), systemd,
            ]
                + (effectiveDockerSocket.map {
                    [
                        AfterRestore(
                            restored: restored,
                            service: DockerReconciler(plugin: plugin, dockerSocket: $0, logger: logger))
                    ]
                } ?? []),
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        do {
            try await group.run()
        } catch {
            logger.critical("supervisor stopped", metadata: ["error": "\(VDEError(wrapping: error).message)"])
            await WorkerShutdown(plugin: plugin, stopNetworks: stopNetworksOnExit, restored: restored).end()
            removeRunDirIfStopped(runDir)
            throw ExitCode.failure
        }
        removeRunDirIfStopped(runDir)
        logger.info("supervisor stopped")
    }

    /// With `--stop-networks-on-exit` nothing of the networks outlives the supervisor, so neither
    /// does their run dir once it is empty (the managed plugin's is a directory in the host's
    /// `/run`; container mode's is a mount point, which stays). Without it, workers may still
    /// use it: it stays, as under systemd (`RuntimeDirectoryPreserve=yes`).
    private func removeRunDirIfStopped(_ runDir: String) {
        if stopNetworksOnExit { FileSystem.removeIfEmpty(runDir) }
    }
}

/// Leaves every worker running when the supervisor shuts down (SIGTERM, SIGINT), after the
/// plugin API has closed: their links end, and each waits on its socket for the next supervisor.
/// `vde-supervisor stop-networks` stops them. With `stopNetworks` (`run --stop-networks-on-exit`,
/// container mode) it stops them itself: a stopped container's processes are all killed (runc
/// kills every process of the container's cgroup when its init exits, also with `--pid host`;
/// measured), which would leave the switches' sockets and the networks' run dirs behind.
///
/// A shutdown during the restore waits for it first: a worker whose `start` is under way would
/// otherwise see its link end, take that for a failed start, and be terminated.
struct WorkerShutdown: Service {
    let plugin: VDEPlugin
    let stopNetworks: Bool
    let restored: Task<Void, Never>

    func run() async throws {
        try? await gracefulShutdown()
        await end()
    }

    func end() async {
        await restored.value
        if stopNetworks { await plugin.stopAllWorkers() } else { await plugin.detachAllWorkers() }
    }
}

extension WorkerShutdown: CustomStringConvertible {
    var description: String { "WorkerShutdown" }
}

/// Runs `service` once the restore of the networks is over (``VDEPlugin/restoreNetworks()``):
/// the plugin API, so that no Docker call reaches a network whose worker has not had its first
/// attempt (they wait in the socket's backlog, or fail at connect without systemd, as before),
/// and the Docker reconciler, which forgets networks and needs their workers.
struct AfterRestore<Wrapped: Service>: Service, CustomStringConvertible {
    let restored: Task<Void, Never>
    let service: Wrapped

    func run() async throws {
        await restored.value
        try await service.run()
    }

    var description: String { "AfterRestore(\(service))" }
}
