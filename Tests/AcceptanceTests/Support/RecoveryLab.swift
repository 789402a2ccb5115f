import Foundation
import Glibc
import Shared
import Testing

/// `vde-supervisor status --json`, decoded and schema-checked by the status tests' helper.
typealias RecoveryStatus = StatusDoc

/// A network namespace of a recovery test; unlike ``NetNS/with(count:_:)`` a test may delete
/// one itself (a container removed), and the rest are deleted at the end.
enum RecoveryNamespaces {
    static func with<T>(count: Int, _ body: ([NetNS]) async throws -> T) async throws -> T {
        var made: [NetNS] = []
        func cleanup() async {
            for ns in made where TempDir.exists(ns.path) {
                _ = try? await Command.run([NetNS.ip, "netns", "del", ns.name], timeout: .seconds(20))
            }
        }
        do {
            for _ in 0..<count {
                let ns = NetNS(name: "vderec-" + IDs.tag(8))
                try await Command.check([NetNS.ip, "netns", "add", ns.name], timeout: .seconds(20))
                made.append(ns)
                try await ns.ip("link", "set", "lo", "up")
            }
            let value = try await body(made)
            await cleanup()
            return value
        } catch {
            await cleanup()
            throw error
        }
    }
}

/// `ping -D -n -i 0.01` from one namespace to a peer, kept running across a fault and then
/// stopped with SIGINT so that it prints its summary.
struct RecoveryPinger: Sendable {
    static let ping = "/usr/bin/ping"

    struct Summary: Sendable, CustomStringConvertible {
        var transmitted: Int
        var received: Int
        var errors: Int
        /// Sequence numbers (1...transmitted) that got no reply.
        var missing: [Int]
        var description: String {
            "\(transmitted) transmitted, \(received) received, \(errors) errors, no reply for icmp_seq \(missing.prefix(40))"
        }
    }

    let process: RecoverySpawned
    let label: String

    /// Starts the pinger (a probe every `interval` seconds), runs `body`, and stops it (also on failure).
    static func with<T>(
        _ label: String, from ns: NetNS, to peer: String, dir: String, interval: String = "0.01",
        _ body: (RecoveryPinger) async throws -> T
    ) async throws -> T {
        guard FileManager.default.isExecutableFile(atPath: ping) else {
            throw AcceptanceFailure(
                "\(ping) is missing (apt-get install iputils-ping): the recovery tests ping every 10 ms")
        }
        let output = dir + "/ping-\(label)-\(IDs.tag(6)).log"
        let process = try RecoverySpawned(
            [NetNS.ip, "netns", "exec", ns.name, ping, "-D", "-n", "-i", interval, "-W", "1", peer],
            outputPath: output)
        let pinger = RecoveryPinger(process: process, label: label)
        do {
            let value = try await body(pinger)
            await process.stop(SIGINT, grace: .seconds(5))
            return value
        } catch {
            await process.stop(SIGINT, grace: .seconds(5))
            throw error
        }
    }

    /// icmp_seq values that got a reply so far.
    func repliedSequences() -> Set<Int> {
        var seen: Set<Int> = []
        for line in process.output(Int.max).split(separator: "\n") where line.contains(" bytes from ") {
            if let range = line.range(of: "icmp_seq="),
                let seq = Int(line[range.upperBound...].prefix { $0.isNumber })
            {
                seen.insert(seq)
            }
        }
        return seen
    }

    /// Waits until `count` replies came back (the path works before the fault).
    func waitForReplies(_ count: Int, deadline: Duration = .seconds(10)) async throws {
        try await Poll.until("\(label): \(count) ping replies", deadline: deadline, every: .milliseconds(50)) {
            guard process.isRunning else {
                throw AcceptanceFailure("ping \(label) exited: \(process.output(2000))")
            }
            return repliedSequences().count >= count
        }
    }

    /// SIGINT, then the summary ping prints.
    func stop() async throws -> Summary {
        let steps = await process.stop(SIGINT, grace: .seconds(5))
        let text = process.output(Int.max)
        guard steps == ["SIGINT"] || steps.isEmpty,
            let line = text.split(separator: "\n").first(where: { $0.contains("packets transmitted") })
        else {
            throw AcceptanceFailure("ping \(label) gave no summary (stop steps \(steps)):\n\(text.suffix(2000))")
        }
        func number(before word: String) throws -> Int {
            guard let range = line.range(of: " " + word),
                let value = Int(line[..<range.lowerBound].split(whereSeparator: { !$0.isNumber }).last ?? "")
            else {
                throw AcceptanceFailure("ping \(label): no number before '\(word)' in its summary: \(line)")
            }
            return value
        }
        let transmitted = try number(before: "packets transmitted")
        let received = try number(before: "received")
        let errors = try line.contains("errors") ? number(before: "errors") : 0
        let replied = repliedSequences()
        let missing = transmitted > 0 ? (1...transmitted).filter { !replied.contains($0) } : []
        return Summary(transmitted: transmitted, received: received, errors: errors, missing: missing)
    }
}

/// Two networks, A and B, each with endpoints joined and their taps moved into namespaces
/// the way dockerd does it; and the checks that everything that should run runs, once.
struct RecoveryLab: Sendable {
    struct Endpoint: Sendable {
        var id: String
        var tap: String
        var mac: String
        /// Without prefix length.
        var address: String
        var namespace: NetNS
    }
    struct Network: Sendable {
        var name: String
        var id: String
        /// Its paths as the supervisor computes them (its own switch in the run dir).
        var paths: NetworkPaths
        var endpoints: [Endpoint]
        /// The vde IPAM pool, when the network uses the vde IPAM driver.
        var poolID: String?
    }

    let host: any RecoveryHost
    let workDir: String
    var a: Network
    var b: Network

    var networks: [Network] { [a, b] }
    var client: PluginClient { host.client }

    /// Builds A (10.211.1.0/24, `aEndpoints` endpoints; through the vde IPAM driver when
    /// `vdeIPAM`) and B (10.211.2.0/24, Docker's default IPAM, 2 endpoints) in `namespaces`
    /// (A's first, then B's).
    static func build(
        host: any RecoveryHost, namespaces: [NetNS], aEndpoints: Int = 2, vdeIPAM: Bool = false,
        workDir: String
    ) async throws -> RecoveryLab {
        precondition(namespaces.count == aEndpoints + 2)
        let a = try await makeNetwork(
            host: host, name: "A", subnet: "10.211.1", namespaces: Array(namespaces.prefix(aEndpoints)),
            vdeIPAM: vdeIPAM)
        let b = try await makeNetwork(
            host: host, name: "B", subnet: "10.211.2", namespaces: Array(namespaces.suffix(2)), vdeIPAM: false)
        let lab = RecoveryLab(host: host, workDir: workDir, a: a, b: b)
        for network in lab.networks {
            try await lab.waitForConnectivity(network, deadline: .seconds(10))
        }
        return lab
    }

    private static func makeNetwork(
        host: any RecoveryHost, name: String, subnet: String, namespaces: [NetNS], vdeIPAM: Bool
    ) async throws -> Network {
        let client = host.client
        let id = IDs.dockerID()
        var poolID: String?
        if vdeIPAM {
            let pool = try await client.ok(
                "/IpamDriver.RequestPool",
                DockerAPI.RequestPoolRequest(
                    AddressSpace: "LocalDefault", Pool: "\(subnet).0/24", SubPool: "", Options: [:], V6: false),
                as: DockerAPI.RequestPoolResponse.self)
            poolID = pool.PoolID
            _ = try await client.ok(
                "/IpamDriver.RequestAddress",
                DockerAPI.RequestAddressRequest(
                    PoolID: pool.PoolID, Address: "\(subnet).1",
                    Options: [DockerAPI.requestAddressTypeKey: DockerAPI.gatewayAddressType]),
                as: DockerAPI.RequestAddressResponse.self)
        }
        try await client.ok(
            "/NetworkDriver.CreateNetwork",
            Requests.createNetwork(id, pool: "\(subnet).0/24", gateway: "\(subnet).1/24"))
        var endpoints: [Endpoint] = []
        for (i, ns) in namespaces.enumerated() {
            let endpoint = IDs.dockerID()
            let address: String
            if let poolID {
                address = try await client.ok(
                    "/IpamDriver.RequestAddress",
                    DockerAPI.RequestAddressRequest(PoolID: poolID, Address: "", Options: [:]),
                    as: DockerAPI.RequestAddressResponse.self
                ).Address
            } else {
                address = "\(subnet).\(10 + i)/24"
            }
            let created = try await client.ok(
                "/NetworkDriver.CreateEndpoint",
                Requests.createEndpoint(network: id, endpoint: endpoint, address: address),
                as: DockerAPI.CreateEndpointResponse.self)
            let mac = try #require(created.Interface?.MacAddress?.rawValue)
            let joined = try await client.ok(
                "/NetworkDriver.Join",
                Requests.join(network: id, endpoint: endpoint, sandbox: ns.path), as: DockerAPI.JoinResponse.self)
            let tap = joined.InterfaceName.SrcName.rawValue
            try await ns.adoptAsEth0(tap: tap, mac: mac, address: address)
            endpoints.append(
                Endpoint(
                    id: endpoint, tap: tap, mac: mac, address: String(address.split(separator: "/")[0]), namespace: ns))
        }
        let paths = try NetworkPaths(runDir: host.runDir, network: NetworkID(id), options: NetworkOptions())
        return Network(name: name, id: id, paths: paths, endpoints: endpoints, poolID: poolID)
    }

    // MARK: traffic

    /// One ping from the network's first endpoint to its second.
    func pingOnce(_ network: Network, from: Int = 0, to: Int = 1) async throws -> CommandResult {
        try await network.endpoints[from].namespace.exec(
            [RecoveryPinger.ping, "-c", "1", "-W", "1", "-n", network.endpoints[to].address], timeout: .seconds(10))
    }

    /// Polls a single ping across the network until one is answered.
    func waitForConnectivity(_ network: Network, from: Int = 0, to: Int = 1, deadline: Duration) async throws {
        var last: CommandResult?
        do {
            try await Poll.until(
                "a ping across network \(network.name) to be answered", deadline: deadline, every: .milliseconds(50)
            ) {
                last = try await pingOnce(network, from: from, to: to)
                return last?.succeeded ?? false
            }
        } catch {
            throw AcceptanceFailure(
                "\(error); last ping: \(last.map(String.init(describing:)) ?? "none")\n--- supervisor log ---\n\(host.logTail(6000))"
            )
        }
    }

    // MARK: status

    func status() async throws -> RecoveryStatus {
        try await StatusCLI.checkedJSON(socket: host.controlSocket).report
    }

    // MARK: what runs

    /// The live processes of one network, read from /proc.
    struct Running: Sendable, CustomStringConvertible {
        var workers: [Int32]
        var switches: [Int32]
        var plugs: [Int32]
        var description: String { "workers \(workers), switches \(switches), plugs \(plugs)" }
    }

    func running(_ network: Network, in table: [Int32: RecoveryProcess] = RecoveryProcess.all()) -> Running {
        let ctl = network.paths.ctlDir
        var result = Running(workers: [], switches: [], plugs: [])
        for p in table.values.sorted(by: { $0.pid < $1.pid }) where !p.isZombie {
            switch p.program {
            case "vde-networker":
                if let i = p.argv.firstIndex(of: "--network-id"), i + 1 < p.argv.count, p.argv[i + 1] == network.id {
                    result.workers.append(p.pid)
                }
            case "vde_switch" where p.argv.contains(ctl): result.switches.append(p.pid)
            case "vde_plug2tap" where p.argv.contains(ctl): result.plugs.append(p.pid)
            default: break
            }
        }
        return result
    }

    /// Every way in which what runs and what status says differ from one healthy worker, one
    /// switch and one plug per endpoint for each network, all in the supervisor's tree (or,
    /// for the processes in `adopted`, left by an earlier supervisor and adopted, in theirs:
    /// its workers, and its detached switches, re-parented to init when it died).
    /// Empty when all is well.
    func problems(expectEndpoints: [String: [String]]? = nil, killed: [Int32] = [], adopted: Set<Int32> = [])
        async -> [String]
    {
        var problems: [String] = []
        let table = RecoveryProcess.all()
        let root = host.supervisorPID
        guard let supervisor = table[root], !supervisor.isZombie else {
            return ["the supervisor (pid \(root)) does not run"]
        }
        // Zombies anywhere in the supervisor's tree: nobody reaped them.
        for p in table.values
        where p.isZombie && (p.parent == root || RecoveryProcess.descends(p.parent, from: root, in: table)) {
            problems.append("zombie in the supervisor's tree: \(p)")
        }
        // What was killed must be gone (a zombie of PID 1 is PID 1's to reap, not ours).
        for pid in killed {
            if let p = table[pid], !p.isZombie || p.parent != 1 {
                problems.append("killed process still there: \(p)")
            }
        }
        let report: RecoveryStatus
        do {
            report = try await status()
        } catch {
            return problems + ["status: \(error)"]
        }
        if report.supervisor.pid != root {
            problems.append("status reports supervisor pid \(report.supervisor.pid), running is \(root)")
        }
        let ourTaps = Set(networks.flatMap { $0.endpoints.map(\.tap) })
        let strayTaps = HostInspector.pluginTaps().intersection(ourTaps)
        if !strayTaps.isEmpty { problems.append("taps of this test in the host netns: \(strayTaps.sorted())") }

        for network in networks {
            let name = "network \(network.name)"
            let expected = Set(expectEndpoints?[network.name] ?? network.endpoints.map(\.id))
            let live = running(network, in: table)
            for pid in live.workers + live.switches + live.plugs
            where !([root] + adopted).contains(where: {
                pid == $0 || RecoveryProcess.descends(pid, from: $0, in: table)
            }) {
                problems.append(
                    "\(name): not in the supervisor's tree (orphan): \(table[pid].map(String.init(describing:)) ?? "\(pid)")"
                )
            }
            if live.workers.count != 1 {
                problems.append("\(name): \(live.workers.count) workers run: \(live.workers)")
            }
            if live.switches.count != 1 {
                problems.append("\(name): \(live.switches.count) switches run: \(live.switches)")
            }
            if live.plugs.count != expected.count {
                problems.append("\(name): \(live.plugs.count) plugs run for \(expected.count) endpoints: \(live.plugs)")
            }
            for pid in live.workers where table[pid]?.parent != root && !adopted.contains(pid) {
                problems.append("\(name): worker \(pid) is not a child of the supervisor \(root)")
            }
            guard let reported = report.network(network.id) else {
                problems.append("\(name): missing from status")
                continue
            }
            if reported.worker.state != "running" {
                problems.append(
                    "\(name): worker state \(reported.worker.state) (lastError \(reported.worker.lastError ?? "-"))")
            }
            if reported.worker.pid == nil || reported.worker.pid != live.workers.first {
                problems.append(
                    "\(name): status says worker pid \(reported.worker.pid.map(String.init) ?? "nil"), running: \(live.workers)"
                )
            }
            if reported.switch.pid == nil || reported.switch.pid != live.switches.first {
                problems.append(
                    "\(name): status says switch pid \(reported.switch.pid.map(String.init) ?? "nil"), running: \(live.switches)"
                )
            }
            if !reported.healthy { problems.append("\(name): status says not healthy") }
            let reportedIDs = Set(reported.endpoints.map(\.id))
            let short = { (id: String) in (try? EndpointID(id))?.short ?? id }
            if reportedIDs != expected {
                problems.append(
                    "\(name): status lists endpoints \(reportedIDs.map(short).sorted()), expected \(expected.map(short).sorted())"
                )
            }
            for endpoint in reported.endpoints {
                if endpoint.state != "plugged" {
                    problems.append("\(name): endpoint \(short(endpoint.id)) is \(endpoint.state)")
                }
                if !(endpoint.plugPID.map { live.plugs.contains($0) } ?? false) {
                    problems.append(
                        "\(name): endpoint \(short(endpoint.id)) plug pid \(endpoint.plugPID.map(String.init) ?? "nil") is not a running plug \(live.plugs)"
                    )
                }
            }
            problems += socketProblems(
                network, name: name, ports: reported.endpoints.compactMap(\.switchPort), plugs: live.plugs)
        }
        // Nothing of this test's run dir belongs to a network that is not A or B.
        let known = networks.map(\.paths.networkDir)
        for socket in TempDir.sockets(under: host.runDir) where !known.contains(where: { socket.hasPrefix($0 + "/") }) {
            problems.append("socket of no network in the run dir: \(socket)")
        }
        return problems
    }

    /// The run dir of a network holds the switch's ctl socket, its management socket, one
    /// data socket per plugged port and one pid file per running plug; nothing stale.
    private func socketProblems(_ network: Network, name: String, ports: [Int], plugs: [Int32]) -> [String] {
        var problems: [String] = []
        let paths = network.paths
        let ctl = paths.ctlDir
        let sockets = Set(TempDir.sockets(under: paths.networkDir))
        // The switch's own ctl socket in its ctl dir, its management socket, and the socket
        // where the worker waits for a supervisor that adopts it.
        let named = [ctl + "/ctl", paths.workerSocket] + (paths.managementSocket.map { [$0] } ?? [])
        for required in named where !sockets.contains(required) {
            problems.append("\(name): \(required) is missing")
        }
        let data = sockets.subtracting(named)
        var dataPorts: [Int] = []
        for path in data.sorted() {
            let file = (path as NSString).lastPathComponent
            guard path.hasPrefix(ctl + "/"), let port = Int(file.split(separator: ".").first ?? "") else {
                problems.append("\(name): unexpected socket \(path)")
                continue
            }
            dataPorts.append(port)
        }
        if dataPorts.sorted() != ports.sorted() {
            problems.append(
                "\(name): data sockets for ports \(dataPorts.sorted()) but endpoints on ports \(ports.sorted()) (\(data.sorted()))"
            )
        }
        let pidFiles = (try? FileManager.default.contentsOfDirectory(atPath: paths.plugsDir)) ?? []
        // A pid file holds `PID STARTTIME`.
        let recorded = pidFiles.compactMap {
            TempDir.readText(paths.plugsDir + "/" + $0).flatMap {
                $0.split(separator: " ").first.flatMap { Int32(String($0).trimmingWhitespace) }
            }
        }
        if Set(recorded) != Set(plugs) || pidFiles.count != plugs.count {
            problems.append(
                "\(name): plug pid files \(pidFiles.count) naming \(recorded.sorted()), running plugs \(plugs)")
        }
        return problems
    }

    /// Polls until ``problems(expectEndpoints:killed:)`` is empty; throws with the last list and the log.
    func waitUntilConsistent(
        _ what: String, expectEndpoints: [String: [String]]? = nil, killed: [Int32] = [],
        adopted: Set<Int32> = [], deadline: Duration = .seconds(15)
    ) async throws {
        var last: [String] = []
        do {
            try await Poll.until(what, deadline: deadline, every: .milliseconds(200)) {
                last = await problems(expectEndpoints: expectEndpoints, killed: killed, adopted: adopted)
                return last.isEmpty
            }
        } catch {
            let evidence = last.contains { $0.contains("data sockets for ports") } ? await heldPortEvidence() : ""
            throw AcceptanceFailure(
                "\(what): still inconsistent after \(deadline):\n  - " + last.joined(separator: "\n  - ")
                    + evidence + "\n--- supervisor log ---\n\(host.logTail(8000))")
        }
    }

    /// Who holds a port that no endpoint has: each switch's own port list (port/print on its management
    /// socket), the unix sockets of the VDE processes with their peers (`ss -xp`), and where
    /// every thread of each worker waits (its system call, and a backtrace where gdb is
    /// installed). For the failure report only.
    private func heldPortEvidence() async -> String {
        var text = ""
        let table = RecoveryProcess.all()
        for network in networks {
            if let management = network.paths.managementSocket {
                let ports = try? await Command.run(
                    ["socat", "-t", "1", "-", "UNIX-CONNECT:" + management], timeout: .seconds(5),
                    stdin: "port/print\n")
                text += "\n--- \(network.name): port/print ---\n\(ports?.stdout.prefix(6000) ?? "(no answer)")"
            }
            for worker in running(network, in: table).workers {
                text += "\n--- \(network.name): worker \(worker) threads ---"
                let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(worker)/task")) ?? []
                for task in tasks.sorted() {
                    let read = { (file: String) in
                        TempDir.readText("/proc/\(worker)/task/\(task)/\(file)")?.trimmingWhitespace ?? "?"
                    }
                    text += "\n  \(task) \(read("comm")): syscall \(read("syscall")), wchan \(read("wchan"))"
                }
                if let trace = try? await Command.run(
                    ["gdb", "-p", "\(worker)", "-batch", "-ex", "thread apply all bt"], timeout: .seconds(30))
                {
                    text += "\n\(trace.stdout.suffix(8000))"
                }
            }
        }
        if let sockets = try? await Command.run(["ss", "-xpn"], timeout: .seconds(10)) {
            let lines = sockets.stdout.split(separator: "\n").filter { line in
                line.contains("vde") || networks.contains { line.contains($0.paths.networkDir) }
            }
            text += "\n--- ss -xpn (VDE) ---\n" + lines.prefix(200).joined(separator: "\n")
        }
        return text
    }
}
