import ArgumentParser

/// The two sockets the client commands (`status`, `link`, `capture`) talk to: the supervisor's
/// control socket, and dockerd's, which they ask to turn Docker's names into IDs and back (never
/// the supervisor itself: calling dockerd from inside a plugin call can deadlock it).
struct ClientSockets: ParsableArguments {
    @Option(help: "The supervisor's control socket.")
    var controlSocket: String = SupervisorConfiguration.defaultControlSocket

    @Option(help: "dockerd's socket, asked for network and container names (none are used when it does not answer).")
    var dockerSocket: String = SupervisorConfiguration.defaultDockerSocket
}
