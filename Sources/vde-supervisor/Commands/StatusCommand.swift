import ArgumentParser
import Glibc
import Shared

/// `vde-supervisor status [ID-PREFIX] [--json]`: what runs, what is healthy, where traffic goes.
/// Exit status: 0 all healthy, 1 something degraded, 2 the supervisor is not reachable.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every network, worker, switch and endpoint.",
        discussion:
            "Exit status: 0 all healthy, 1 something degraded (or no network matches), 2 the supervisor is not reachable."
    )

    @Argument(
        help:
            "Show one network in detail: its Docker name, a prefix of its ID, or the name of a container on it."
    )
    var network: String?

    @Flag(help: "Print the status as JSON (schema: docs/status.md).")
    var json = false

    @OptionGroup var sockets: ClientSockets

    func run() throws {
        let reply: (status: Int, body: [UInt8])
        do {
            reply = try ControlClient.get(socketPath: sockets.controlSocket, path: "/v1/status")
        } catch {
            Self.printError(
                "vde-supervisor status: cannot reach the supervisor at \(sockets.controlSocket): \(error.message).\n"
                    + "Is it running? Start it with `systemctl start vde-supervisor` (or `vde-supervisor run`); "
                    + "pass --control-socket if it uses another socket. Reading the socket needs root.")
            throw ExitCode(2)
        }
        guard reply.status == 200, var report = try? JSONCoding.decode(StatusReport.self, from: reply.body) else {
            Self.printError(
                "vde-supervisor status: unexpected answer from \(sockets.controlSocket) (HTTP \(reply.status)): "
                    + String(decoding: reply.body.prefix(300), as: UTF8.self))
            throw ExitCode(2)
        }
        DockerNames.fetch(socket: sockets.dockerSocket, networkIDs: report.networks.map(\.id)).label(&report)
        if let network {
            report.networks = NetworkSelection.select(network, in: report.networks)
            guard !report.networks.isEmpty else {
                Self.printError(
                    "vde-supervisor status: no vde network named '\(UntrustedText(network))', with an ID starting "
                        + "with it, or with a container of that name (names need dockerd at \(sockets.dockerSocket))")
                throw ExitCode(1)
            }
            report.healthy = report.networks.allSatisfy(\.healthy)
        }
        let text: String
        if json {
            text = (try? JSONCoding.encodePretty(report)).map { String(decoding: $0, as: UTF8.self) + "\n" } ?? "{}\n"
        } else {
            text = StatusTable(
                report: report, color: isatty(1) == 1 && getenv("NO_COLOR") == nil,
                detailed: network != nil
            ).render()
        }
        Self.write(text, to: 1)
        if !report.healthy { throw ExitCode(1) }
    }

    static func printError(_ message: String) {
        write(message + "\n", to: 2)
    }

    static func write(_ text: String, to fd: Int32) {
        try? FileSystem.writeAll(Array(text.utf8), to: fd)
    }
}
