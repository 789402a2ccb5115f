import Logging

/// Where the supervisor listens, keeps its state and puts its switches; set by `run`'s flags.
struct SupervisorConfiguration: Sendable {
    static let defaultSocket = "/run/docker/plugins/vde.sock"
    static let defaultStateDir = "/var/lib/vde-supervisor"
    static let defaultRunDir = "/run/vde-supervisor"
    static let defaultControlSocket = "/run/vde-supervisor/control.sock"
    /// dockerd's API socket, where the client commands and the reconciler ask it.
    static let defaultDockerSocket = "/var/run/docker.sock"

    /// The Docker plugin socket.
    var socketPath: String = SupervisorConfiguration.defaultSocket
    var stateDir: String = SupervisorConfiguration.defaultStateDir
    /// Parent of each network's own switch directory (`RUN_DIR/<short id>/ctl`, `.../mgmt`).
    var runDir: String = SupervisorConfiguration.defaultRunDir
    /// The `vde-networker` executable.
    var networkerPath: String
    var logLevel: Logger.Level = .info
}
