import Foundation
import Glibc

/// The real `vde-supervisor link` CLI against a test's supervisor: the supervisor's private
/// control socket, and dockerd (its default socket) to resolve network and container names.
enum LinkCLI {
    static func run(_ arguments: [String], _ supervisor: Supervisor, timeout: Duration = .seconds(30)) async throws
        -> CommandResult
    {
        try await Command.run(
            // Options first: everything after NETWORK is the command's words.
            [try Binaries.supervisor, "link", "--control-socket", supervisor.statusControlSocket] + arguments,
            timeout: timeout)
    }

    /// Like ``run(_:_:timeout:)`` and requires exit 0.
    @discardableResult
    static func check(_ arguments: [String], _ supervisor: Supervisor, timeout: Duration = .seconds(30)) async throws
        -> CommandResult
    {
        let result = try await run(arguments, supervisor, timeout: timeout)
        guard result.succeeded else {
            throw AcceptanceFailure(
                "vde-supervisor link failed: \(result)\n--- supervisor log ---\n\(supervisor.logTail())")
        }
        return result
    }
}

/// A container's network namespace, entered from the host with `nsenter -t PID -n` (or a
/// namespace the test made, with `ip netns exec`): the test image is busybox only, so iputils
/// `ping`, `iperf3` and `ip` run from the host, in the container's namespace (their traffic
/// stays between the test's containers and namespaces).
struct ContainerNet: Sendable {
    static let nsenter = "/usr/bin/nsenter"
    static let ping = "/usr/bin/ping"
    static let iperf3 = "/usr/bin/iperf3"

    /// The container's name (or the namespace's), for messages.
    let container: String
    private let prefix: [String]

    init(container: String, pid: Int32) {
        self.container = container
        prefix = [Self.nsenter, "-t", "\(pid)", "-n", "--"]
    }

    init(namespace: NetNS) {
        container = "netns " + namespace.name
        prefix = [NetNS.ip, "netns", "exec", namespace.name]
    }

    func argv(_ command: [String]) -> [String] { prefix + command }

    func run(_ command: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
        try await Command.run(argv(command), timeout: timeout)
    }

    /// The interface `name`: index, MAC, flags (`NO-CARRIER` when no plug is attached) and IPv4 address.
    func interface(_ name: String = "eth0") async throws -> InterfaceView {
        let link = try await Command.check(argv([NetNS.ip, "-o", "link", "show", "dev", name]), timeout: .seconds(20))
        let addr = try await Command.check(
            argv([NetNS.ip, "-o", "-4", "addr", "show", "dev", name]), timeout: .seconds(20))
        return InterfaceView(linkLine: link.stdout.trimmingWhitespace, addressLine: addr.stdout.trimmingWhitespace)
    }

    /// The name of the interface that has `address` (eth0, eth1, ...).
    func interfaceName(with address: String) async throws -> String {
        let all = try await Command.check(argv([NetNS.ip, "-o", "-4", "addr", "show"]), timeout: .seconds(20)).stdout
        for line in all.split(separator: "\n") where line.contains(" \(address)/") {
            let fields = line.split(separator: " ")
            if fields.count > 1 { return String(fields[1]) }
        }
        throw AcceptanceFailure("\(container) has no interface with \(address): \(all)")
    }

    /// A permanent neighbour entry, so that a measurement counts the link and not ARP (an
    /// ARP request lost to the impairment would be retried only after 1 s and skew it).
    func pinNeighbour(_ address: String, mac: String, device: String) async throws {
        try await Command.check(
            argv([NetNS.ip, "neigh", "replace", address, "lladdr", mac, "dev", device, "nud", "permanent"]),
            timeout: .seconds(20))
    }

    /// iputils ping: `count` probes every `interval` seconds, each waited for `wait` seconds.
    func ping(_ address: String, count: Int, interval: Double = 0.05, wait: Double = 2) async throws -> PingRun {
        let result = try await run(
            [Self.ping, "-n", "-c", "\(count)", "-i", "\(interval)", "-W", "\(wait)", address],
            timeout: .seconds(Double(count) * interval + wait + 30))
        return PingRun(result: result)
    }

    /// iputils ping that stops at the first reply or after `deadline` seconds, probing every
    /// 10 ms; and how long that took, from before nsenter started to ping's exit (so a few ms
    /// more than the path needed).
    func firstReply(_ address: String, deadline: Int) async throws -> (run: PingRun, elapsed: Duration) {
        let clock = ContinuousClock()
        let start = clock.now
        let result = try await run(
            [Self.ping, "-n", "-c", "1", "-i", "0.01", "-w", "\(deadline)", address],
            timeout: .seconds(deadline + 30))
        return (PingRun(result: result), clock.now - start)
    }
}

/// `ip -o link show` and `ip -o -4 addr show` of one interface.
struct InterfaceView: Sendable, Equatable, CustomStringConvertible {
    var linkLine: String
    var addressLine: String

    /// The kernel's interface index (the number before the name).
    var index: Int? { linkLine.split(separator: ":").first.flatMap { Int(String($0).trimmingWhitespace) } }
    var noCarrier: Bool { linkLine.contains("NO-CARRIER") }
    /// `10.77.70.10/24`.
    var ipv4: String? {
        let fields = addressLine.split(separator: " ")
        guard let inet = fields.firstIndex(of: "inet"), inet + 1 < fields.count else { return nil }
        return String(fields[inet + 1])
    }
    var mac: String? {
        let fields = linkLine.split(separator: " ")
        guard let ether = fields.firstIndex(of: "link/ether"), ether + 1 < fields.count else { return nil }
        return String(fields[ether + 1])
    }
    /// What must not change while a link is shaped, pulled or plugged back: the same
    /// interface (index, MAC) with the same address.
    var identity: String { "index \(index.map(String.init) ?? "?") mac \(mac ?? "?") ipv4 \(ipv4 ?? "none")" }
    var description: String { "\(linkLine) | \(addressLine)" }
}

/// What one iputils ping run saw.
struct PingRun: Sendable, CustomStringConvertible {
    var result: CommandResult

    var transmitted: Int { number(before: " packets transmitted") ?? 0 }
    var received: Int { number(before: " received") ?? 0 }
    /// Replies beyond one per probe (`+N duplicates`).
    var duplicates: Int { number(before: " duplicates") ?? 0 }
    var lossFraction: Double { transmitted == 0 ? 1 : Double(transmitted - received) / Double(transmitted) }

    /// Each reply's round trip, in milliseconds (`time=12.3 ms`).
    var rtts: [Double] {
        result.stdout.split(separator: "\n").compactMap { line in
            guard let range = line.range(of: "time=") else { return nil }
            return Double(line[range.upperBound...].prefix { $0.isNumber || $0 == "." })
        }
    }

    var medianRTT: Double? {
        let sorted = rtts.sorted()
        guard !sorted.isEmpty else { return nil }
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    private func number(before marker: String) -> Int? {
        guard let line = result.stdout.split(separator: "\n").first(where: { $0.contains(" packets transmitted") }),
            let range = line.range(of: marker)
        else { return nil }
        let head = line[..<range.lowerBound]
        let digits = head.reversed().prefix { $0.isNumber }
        return Int(String(digits.reversed()))
    }

    var description: String {
        let median = medianRTT.map { String(format: "%.1f ms", $0) } ?? "none"
        let summary = result.stdout.split(separator: "\n").suffix(2).joined(separator: " / ")
        return
            "\(transmitted) sent, \(received) received, median RTT \(median) [\(summary)] \(result.succeeded ? "" : result.description)"
    }
}

extension DockerScope {
    /// The network namespace of the running container `base` (its init's pid).
    func net(_ base: String) async throws -> ContainerNet {
        let pid = try await Docker.check(
            ["inspect", "--format", "{{.State.Pid}}", name(base)], timeout: .seconds(30)
        ).stdout.trimmingWhitespace
        guard let value = Int32(pid), value > 0 else {
            throw AcceptanceFailure("container \(name(base)) has no running process (pid '\(pid)')")
        }
        return ContainerNet(container: name(base), pid: value)
    }

    /// `docker run -d --network name=NET,driver-opt=K=V... [--ip IP]` (the endpoint options
    /// reach CreateEndpoint); returns the result whatever it was.
    func startContainer(_ base: String, network: String, driverOptions: [String], ip: String? = nil) async throws
        -> CommandResult
    {
        let spec = (["name=\(name(network))"] + driverOptions.map { "driver-opt=\($0)" }).joined(separator: ",")
        let containerName = name(base)
        track(container: containerName)
        var args = ["run", "-d", "--name", containerName, "--label", Docker.label, "--network", spec]
        if let ip { args += ["--ip", ip] }
        return try await Docker.run(args + [Docker.image, "sleep", "600"])
    }

    /// `docker network connect --driver-opt K=V... [--ip IP] NET CONTAINER`; the result.
    func connect(_ base: String, to network: String, driverOptions: [String], ip: String? = nil) async throws
        -> CommandResult
    {
        var args = ["network", "connect"]
        for option in driverOptions { args += ["--driver-opt", option] }
        if let ip { args += ["--ip", ip] }
        return try await Docker.run(args + [name(network), name(base)])
    }
}

/// iperf3 between two containers' namespaces: a one-shot server in one, a client in the other.
enum IPerf {
    /// Receiver throughput in bit/s of a `seconds`-long TCP test from `client` to the server
    /// at `address` in `server` (with `reverse`, from the server to the client).
    static func receivedBitsPerSecond(
        server: ContainerNet, address: String, client: ContainerNet, seconds: Int, reverse: Bool, dir: String
    ) async throws -> Double {
        let port = String(Int.random(in: 20_000...40_000))
        let log = dir + "/iperf3-server-\(port).log"
        let run = try await Background.with(
            // --forceflush: to a file, iperf3 would hold "Server listening" in its buffer.
            server.argv([ContainerNet.iperf3, "-s", "-1", "--forceflush", "-B", address, "-p", port]), logPath: log
        ) { process -> Double in
            try await Poll.until("iperf3 to listen in \(server.container)") {
                guard process.isRunning else { throw AcceptanceFailure("iperf3 -s exited: \(process.logTail())") }
                return process.logTail().contains("Server listening")
            }
            // -O 1: the first second (TCP slow start into the queue) is not counted.
            let result = try await client.run(
                [ContainerNet.iperf3, "-c", address, "-p", port, "-t", "\(seconds)", "-O", "1", "-J"]
                    + (reverse ? ["-R"] : []),
                timeout: .seconds(Double(seconds) + 60))
            guard result.succeeded,
                let json = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
                let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
                let bits = received["bits_per_second"] as? Double
            else { throw AcceptanceFailure("iperf3 client failed or printed no result: \(result)") }
            return bits
        }
        return try run.outcome.get()
    }
}
