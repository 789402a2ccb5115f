import ArgumentParser
import Glibc
import Shared

/// `vde-supervisor capture NETWORK [CONTAINER|ENDPOINT] [-w FILE] [-c COUNT] [--duration D]
/// [--snaplen N] [FILTER...]`: a network's whole segment, or one endpoint, as pcap or a line per
/// frame (issue 14).
///
/// The order: parse and check the arguments; load libpcap and compile the filter (a bad one
/// starts nothing); resolve names through dockerd; ask the supervisor (`POST /v1/capture`),
/// which has the network's worker open a one-shot socket; connect to it and read the frames
/// (``CaptureStream``); the filter runs here, on each frame (the worker hands over every frame
/// of the source: docs/capture.md says why). Exit status: 0 the capture ended as asked, 1 it
/// was refused or the worker ended it, 2 a bad filter or the supervisor is not reachable.
struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture a network's frames, or one container's, as pcap or a line per frame.",
        usage: """
            vde-supervisor capture NETWORK [CONTAINER|ENDPOINT] [-w FILE] [-c COUNT] [--duration D] [--snaplen N] [FILTER...]
            vde-supervisor capture lab | wireshark -k -i -
            vde-supervisor capture lab web -c 10 icmp
            """,
        discussion: """
            Without CONTAINER: every frame that enters the network's switch (containers, VMs and \
            external plugs alike); needs a switch the plugin started. With CONTAINER (a name, ID or \
            ID prefix of a container on the network, or an endpoint ID prefix): both directions of \
            its interface. FILTER is a tcpdump expression (pcap-filter(7)), applied here. Output: \
            pcap with nanosecond timestamps to -w FILE, or to stdout with -w - or when stdout is no \
            terminal; on a terminal, a line per frame. Ends on -c, --duration, Ctrl-C, SIGTERM or a \
            closed stdout, then prints the counts on stderr. Exit status: 0 ended as asked, 1 refused \
            or ended by the worker, 2 a bad filter or the supervisor is not reachable.
            """)

    @Argument(help: "The network: its Docker name, ID or ID prefix.")
    var network: String

    @Argument(
        help: ArgumentHelp(
            "[CONTAINER|ENDPOINT] [FILTER...]: a container on the network (or an endpoint ID prefix), "
                + "then a tcpdump filter expression.",
            valueName: "words"))
    var words: [String] = []

    @Option(name: .customShort("w"), help: ArgumentHelp("Write pcap to FILE (- for stdout).", valueName: "FILE"))
    var write: String?

    @Option(name: .customShort("c"), help: ArgumentHelp("Stop after COUNT frames.", valueName: "COUNT"))
    var count: Int?

    @Option(help: ArgumentHelp("Stop after this long: 30 (seconds), 500ms, 2m, 1h.", valueName: "D"))
    var duration: String?

    @Option(help: ArgumentHelp("Keep at most N bytes of each frame (1 to 262144).", valueName: "N"))
    var snaplen: Int?

    @OptionGroup var sockets: ClientSockets

    func validate() throws {
        do {
            _ = try arguments()
        } catch {
            throw ValidationError(error.message)
        }
    }

    private func arguments() throws(CaptureError) -> CaptureArguments {
        try CaptureArguments(
            write: write, count: count, duration: duration, snaplen: snaplen, stdoutIsTerminal: isatty(1) == 1)
    }

    func run() throws {
        let arguments = try arguments()
        let docker = DockerNames.inspect(socket: sockets.dockerSocket, network: network)
        let target: CaptureTarget
        do {
            target = try CaptureTarget.split(network: network, words: words, docker: docker)
        } catch {
            fail(error.message, status: 1)
        }

        // libpcap and the filter first: a bad filter starts nothing.
        let session: PcapSession
        let filter: PcapFilter?
        do {
            session = try PcapSession(pcap: LibPcap.load(), snaplen: arguments.snaplen)
            filter = try target.filter.map { text throws(CaptureError) in try session.compile(text) }
        } catch {
            var message = error.message
            if let first = words.first, target.given == nil {
                // The first word may have been meant as a container that could not be named.
                if let docker {
                    message += " ('\(UntrustedText(first))' is no container on network \(docker.name) either)"
                } else {
                    message +=
                        " (container names need dockerd at \(sockets.dockerSocket), which did not answer or knows no network "
                        + "'\(UntrustedText(network))'; an endpoint ID prefix works without it)"
                }
            }
            fail(message, status: 2)
        }
        if case .file(let path) = arguments.output {
            let directory = path.contains("/") ? FileSystem.parent(of: path) : "."
            guard access(directory.isEmpty ? "/" : directory, W_OK) == 0 else {
                fail("cannot write \(path): \(SystemCallError.text(errno)) (\(directory))", status: 1)
            }
        }

        var reply = try start(target)
        reply.networkName = docker?.name
        reply.container = reply.endpoint.flatMap { docker?.containers[$0] }

        let socket: UnixSocket
        do {
            socket = try UnixSocket.connect(
                to: reply.socket, timeout: .seconds(WorkerProtocol.captureConnectTimeoutSeconds))
        } catch {
            fail("cannot connect to the capture's socket \(reply.socket): \(error.text)", status: 1)
        }
        defer { socket.close() }
        let sink: CaptureStream.Sink
        switch arguments.output {
        case .summary:
            sink = .summary(utcOffset: Self.localUTCOffset())
        case .stdoutPcap, .file:
            let path: String
            if case .file(let file) = arguments.output { path = file } else { path = "-" }
            do {
                sink = .pcap(try PcapWriter(session: session, path: path))
            } catch {
                fail(error.message, status: 1)
            }
        }
        StatusCommand.printError("vde-supervisor capture: \(Self.describe(reply, filter: target.filter))")
        let stream = CaptureStream(
            socket: socket, arguments: arguments, filter: filter, sink: sink, endpointCapture: reply.endpoint != nil,
            signals: StopSignals.install())
        let outcome = stream.run()
        StatusCommand.printError(outcome.summary)
        if let failure = outcome.failure {
            fail(failure, status: 1)
        }
        if let end = outcome.end, !end.reason.isEmpty {
            fail("the worker ended the capture: \(end.reason)", status: 1)
        }
        if outcome.end == nil && outcome.stoppedBy == nil {
            fail("the worker closed the capture without saying why", status: 1)
        }
    }

    /// `POST /v1/capture`; the reply, or exits with the supervisor's error.
    private func start(_ target: CaptureTarget) throws -> CaptureReply {
        let request = CaptureRequest(network: target.network, endpoint: target.endpoint, filter: target.filter)
        let body: [UInt8]
        do {
            body = try JSONCoding.encode(request)
        } catch {
            fail("cannot encode the request: \(error)", status: 1)
        }
        let reply: (status: Int, body: [UInt8])
        do {
            reply = try ControlClient.post(socketPath: sockets.controlSocket, path: "/v1/capture", body: body)
        } catch {
            fail(
                "cannot reach the supervisor at \(sockets.controlSocket): \(error.message).\n"
                    + "Is it running? Start it with `systemctl start vde-supervisor` (or `vde-supervisor run`); "
                    + "pass --control-socket if it uses another socket. The socket needs root.", status: 2)
        }
        guard reply.status == 200, let answer = try? JSONCoding.decode(CaptureReply.self, from: reply.body) else {
            let message =
                (try? JSONCoding.decode(DockerAPI.ErrorResponse.self, from: reply.body))?.Err
                ?? "unexpected answer (HTTP \(reply.status)): "
                + String(decoding: reply.body.prefix(300), as: UTF8.self)
            fail(message, status: 1)
        }
        return answer
    }

    /// `capturing network lab (3f2a1b0c9d8e), container web (endpoint 5e6f...), filter 'icmp'`.
    static func describe(_ reply: CaptureReply, filter: String?) -> String {
        let network = reply.networkName.map { "\($0) (\(reply.shortNetwork))" } ?? reply.shortNetwork
        var text = "capture \(reply.id) of network \(network)"
        if let endpoint = reply.endpoint {
            let short = String(endpoint.prefix(12))
            if let container = reply.container {
                let name = container.hasPrefix("/") ? String(container.dropFirst()) : container
                text += ", container \(name) (endpoint \(short))"
            } else {
                text += ", endpoint \(short)"
            }
        } else {
            text += ", whole segment"
        }
        if let filter { text += ", filter '\(filter)'" }
        return text
    }

    /// Seconds east of UTC where this process runs, for the time of day of summary lines.
    static func localUTCOffset() -> Int {
        var now = time(nil)
        var parts = tm()
        guard localtime_r(&now, &parts) != nil else { return 0 }
        return parts.tm_gmtoff
    }

    private func fail(_ message: String, status: Int32) -> Never {
        StatusCommand.printError("vde-supervisor capture: \(message)")
        Self.exit(withError: ExitCode(status))
    }
}
