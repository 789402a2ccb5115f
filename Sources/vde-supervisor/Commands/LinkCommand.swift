import ArgumentParser
import Glibc
import Shared

/// `vde-supervisor link NETWORK [CONTAINER] show|set KEY=VALUE...|clear [KEY...]|down|up`:
/// shows or changes links live (issue 13). Names are resolved through dockerd here, in the CLI
/// (``LinkTarget``); the change itself goes to the supervisor's control socket (`POST /v1/link`).
/// Exit status: 0 done, 1 refused (or a worker could not apply it yet), 2 the supervisor is not reachable.
struct LinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "link",
        abstract: "Show or change the links of a network's endpoints: delay, jitter, loss, duplication, rate, cable.",
        usage: """
            vde-supervisor link NETWORK [CONTAINER] show
            vde-supervisor link NETWORK [CONTAINER] set KEY=VALUE...
            vde-supervisor link NETWORK [CONTAINER] clear [KEY...]
            vde-supervisor link NETWORK [CONTAINER] down|up
            """,
        discussion: """
            Keys: delay, jitter (durations: 20ms, 1.5s, 500us), loss, dup (percentages: 1%, 0.5%), \
            loss_burst (frames), rate (10mbit, 512kbit, 1gbit). Each applies to each direction of \
            the endpoint's link to the switch. Without CONTAINER the action applies to every endpoint \
            of the network, and set/clear also change the network's default, which later endpoints \
            get; down/up act on the current endpoints only. Changes are recorded by the supervisor \
            and survive restarts. Exit status: 0 done, 1 refused or not applied by a worker, 2 the \
            supervisor is not reachable.
            """)

    @Argument(help: "The network: its Docker name, ID or ID prefix.")
    var network: String

    @Argument(
        parsing: .remaining,
        help: ArgumentHelp(
            "[CONTAINER] ACTION [ARGS...]: a container's name, ID or ID prefix (or an endpoint ID prefix), "
                + "then show, set KEY=VALUE..., clear [KEY...], down or up.",
            valueName: "words"))
    var words: [String] = []

    @Flag(help: "Print the result as JSON (the control API's reply, with container names).")
    var json = false

    @OptionGroup var sockets: ClientSockets

    func validate() throws {
        do {
            _ = try Self.parse(network: network, words: words)
        } catch {
            throw ValidationError(error.message)
        }
    }

    func run() throws {
        let parsed = try Self.parse(network: network, words: words)
        let docker = DockerNames.inspect(socket: sockets.dockerSocket, network: network)
        var request = parsed.request
        do {
            let target = try LinkTarget.resolve(network: network, container: parsed.container, docker: docker)
            request.network = target.network
            request.endpoint = target.endpoint
        } catch {
            StatusCommand.printError("vde-supervisor link: \(error.message)")
            throw ExitCode(1)
        }
        let body: [UInt8]
        do {
            body = try JSONCoding.encode(request)
        } catch {
            StatusCommand.printError("vde-supervisor link: cannot encode the request: \(error)")
            throw ExitCode(1)
        }
        let reply: (status: Int, body: [UInt8])
        do {
            reply = try ControlClient.post(socketPath: sockets.controlSocket, path: "/v1/link", body: body)
        } catch {
            StatusCommand.printError(
                "vde-supervisor link: cannot reach the supervisor at \(sockets.controlSocket): \(error.message).\n"
                    + "Is it running? Start it with `systemctl start vde-supervisor` (or `vde-supervisor run`); "
                    + "pass --control-socket if it uses another socket. The socket needs root.")
            throw ExitCode(2)
        }
        guard reply.status == 200, var answer = try? JSONCoding.decode(LinkReply.self, from: reply.body) else {
            var message =
                (try? JSONCoding.decode(DockerAPI.ErrorResponse.self, from: reply.body))?.Err
                ?? "unexpected answer (HTTP \(reply.status)): "
                + String(decoding: reply.body.prefix(300), as: UTF8.self)
            if reply.status == 404, message.hasPrefix("no vde network") {
                if let docker {
                    message =
                        "Docker's network '\(UntrustedText(docker.name))' (\(docker.id.prefix(12))) is not a vde network "
                        + "this supervisor runs"
                } else {
                    message += " (and dockerd at \(sockets.dockerSocket) knows no network '\(UntrustedText(network))')"
                }
            }
            StatusCommand.printError("vde-supervisor link: \(message)")
            throw ExitCode(1)
        }
        for index in answer.endpoints.indices {
            answer.endpoints[index].container = docker?.containers[answer.endpoints[index].id]
        }
        let text: String
        if json {
            text = (try? JSONCoding.encodePretty(answer)).map { String(decoding: $0, as: UTF8.self) + "\n" } ?? "{}\n"
        } else {
            text = Self.render(answer, networkName: docker?.name, wholeNetwork: request.endpoint == nil)
        }
        StatusCommand.write(text, to: 1)
        if answer.endpoints.contains(where: { $0.failed == true }) { throw ExitCode(1) }
    }

    /// Splits `[CONTAINER] ACTION [ARGS...]`. The first word is the action when it names one,
    /// unless the second names one too (a container called `down`: `link lab down up`).
    static func parse(network: String, words: [String]) throws(VDEError) -> (container: String?, request: LinkRequest) {
        func action(_ word: String) -> LinkRequest.Action? { LinkRequest.Action(rawValue: word) }
        var rest = words[...]
        var container: String?
        if let first = rest.first, action(first) == nil || (rest.count >= 2 && action(rest[rest.startIndex + 1]) != nil)
        {
            container = first
            rest = rest.dropFirst()
        }
        let actions = LinkRequest.Action.allCases.map(\.rawValue).joined(separator: ", ")
        guard let word = rest.first else {
            if let container {
                throw .invalid(
                    "'\(UntrustedText(container))' is no action (\(actions)); after a CONTAINER comes the action")
            }
            throw .invalid("missing the action: one of \(actions)")
        }
        guard let chosen = action(word) else {
            throw .invalid("unknown action '\(UntrustedText(word))': one of \(actions)")
        }
        let arguments = Array(rest.dropFirst())
        var request = LinkRequest(network: network, endpoint: container, action: chosen)
        switch chosen {
        case .set:
            var settings: [String: String] = [:]
            for argument in arguments {
                guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
                    throw .invalid("'\(UntrustedText(argument))' is not KEY=VALUE (e.g. delay=50ms)")
                }
                let key = String(argument[..<equals])
                guard settings[key] == nil else { throw .invalid("\(key) is given twice") }
                settings[key] = String(argument[argument.index(after: equals)...])
            }
            request.settings = settings
        case .clear:
            request.keys = arguments
        case .show, .down, .up:
            guard arguments.isEmpty else {
                throw .invalid(
                    "\(chosen.rawValue) takes no arguments; got \(UntrustedText(arguments.joined(separator: " ")))")
            }
        }
        return (container, request)
    }

    /// One line per endpoint: container (or endpoint), cable up/down, settings, the plug's state;
    /// then the worker's notes. Without a container, first the network's default.
    static func render(_ reply: LinkReply, networkName: String?, wholeNetwork: Bool) -> String {
        var out = ""
        if wholeNetwork {
            out +=
                "network \(networkName.map { "\($0) (\(reply.shortNetwork))" } ?? reply.shortNetwork): default "
                + (reply.networkDefault?.summary ?? "none") + "\n"
        }
        if reply.endpoints.isEmpty {
            return out + (wholeNetwork ? "no endpoints\n" : "")
        }
        var rows = [["CONTAINER", "ENDPOINT", "LINK", "SETTINGS", "PLUG"]]
        for endpoint in reply.endpoints {
            rows.append([
                endpoint.container.map { $0.hasPrefix("/") ? String($0.dropFirst()) : $0 } ?? "-",
                endpoint.shortID, endpoint.link.down ? "down" : "up", endpoint.link.summary, endpoint.state,
            ])
        }
        var widths = [Int](repeating: 0, count: rows[0].count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        for row in rows {
            var line = ""
            for (i, cell) in row.enumerated() {
                line += i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count + 2)
            }
            out += line + "\n"
        }
        for endpoint in reply.endpoints {
            if let note = endpoint.note { out += "\(endpoint.shortID): \(note)\n" }
        }
        return out
    }
}
