import CSystemd
import Dispatch
import Glibc
import Shared
import Synchronization
import Testing

@testable import vde_supervisor

/// A stand-in for dockerd's API socket that answers `GET /networks` only when the test lets it,
/// so that a test can act while the reconciler waits for the answer.
final class SlowDockerSocket: Sendable {
    let path: String
    private let listener: Int32
    private let reply: String
    private let requests = Atomic<Int>(0)
    private let release = DispatchSemaphore(value: 0)

    init(path: String, networks: String) throws {
        self.path = path
        reply =
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(networks.utf8.count)\r\n\r\n"
            + networks
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(listener >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(
            bound == 0 && listen(listener, 8) == 0, "cannot listen on \(path): \(String(cString: strerror(errno)))")
        DispatchQueue(label: "SlowDockerSocket").async { [self] in serve() }
    }

    /// How many requests have arrived.
    var requestCount: Int { requests.load(ordering: .sequentiallyConsistent) }

    /// Lets the pending (and every later) request be answered.
    func answer() { release.signal() }

    /// Stops accepting; the serving thread ends.
    func close() {
        shutdown(listener, Int32(SHUT_RDWR))
        release.signal()
    }

    private func serve() {
        while true {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { break }
            var request: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !request.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) {
                let n = recv(connection, &buffer, buffer.count, 0)
                if n <= 0 { break }
                request += buffer[..<n]
            }
            requests.add(1, ordering: .sequentiallyConsistent)
            release.wait()
            release.signal()  // stay open for later requests
            _ = reply.withCString { send(connection, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            Glibc.close(connection)
        }
        Glibc.close(listener)
    }
}

@Suite(.timeLimit(.minutes(1))) struct DockerReconcilerTests {
    static func record(_ id: NetworkID) throws -> NetworkRecord {
        let options = try NetworkOptions.parse([:])
        return NetworkRecord(
            id: id, options: options,
            switchSpec: try SwitchSpec(
                paths: NetworkPaths(runDir: "/run/vde-test", network: id, options: options),
                mode: .own, group: nil, numPorts: 32), switchStarted: true,
            ipv4Data: [], ipv6Data: [], poolIDs: [], createdAt: 0)
    }

    /// Adds a network to the plugin's state the way CreateNetwork records it.
    static func add(_ id: NetworkID, to plugin: VDEPlugin) async throws {
        var state = await plugin.state
        state.networks[id] = try record(id)
        try await plugin.commit(state)
    }

    @Test func aNetworkCreatedWhileDockerdIsAskedIsKept() async throws {
        var template = Array("/tmp/vde-reconciler-test-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer {
            $0.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/nonexistent"
        }
        defer {
            for file in ["/state/state.json", "/state/state.json.1", "/state/lock", "/state", "/docker.sock"] {
                remove(directory + file)
            }
            rmdir(directory)
        }
        let plugin = try VDEPlugin(
            configuration: SupervisorConfiguration(
                socketPath: directory + "/vde.sock", stateDir: directory + "/state",
                runDir: directory + "/run", networkerPath: "/bin/false"),
            logger: .init(label: "test"))
        let removedMeanwhile = NetworkID(stringLiteral: String(repeating: "a", count: 64))
        let createdMeanwhile = NetworkID(stringLiteral: String(repeating: "b", count: 64))
        let stillThere = NetworkID(stringLiteral: String(repeating: "c", count: 64))
        try await Self.add(removedMeanwhile, to: plugin)
        try await Self.add(stillThere, to: plugin)
        let docker = try SlowDockerSocket(
            path: directory + "/docker.sock",
            networks: #"[{"Id":"\#(stillThere)","Driver":"vde"},{"Id":"f00","Driver":"bridge"}]"#)
        defer { docker.close() }
        let reconciler = DockerReconciler(plugin: plugin, dockerSocket: docker.path, logger: .init(label: "test"))
        let run = Task { await reconciler.reconcileOnce() }
        let deadline = ContinuousClock.now + .seconds(20)
        while docker.requestCount == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try #require(docker.requestCount == 1, "the reconciler never asked")
        // CreateNetwork arrives while dockerd's answer (which cannot list it) is on its way.
        try await Self.add(createdMeanwhile, to: plugin)
        docker.answer()
        await run.value
        let networks = await plugin.state.networks
        #expect(networks[removedMeanwhile] == nil, "a network dockerd no longer knows is forgotten")
        #expect(networks[stillThere] != nil)
        #expect(networks[createdMeanwhile] != nil, "a network created during the question must be kept")
    }
}
