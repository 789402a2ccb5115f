import Shared
import Synchronization
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's kept management connection (``ManagementSession``) with a real vde_switch.
@Suite(.timeLimit(.minutes(1))) struct ManagementSessionTests {
    /// Clients that connect while the worker asks the switch things get their ports back when
    /// they leave. With a connection per exchange (`session: nil`), vde_switch 2.3.2 kept, for
    /// good, the port of a client that connected while a query's connection was open: checked,
    /// this test then fails (three runs: 16, 16 and 20 of the 20 clients kept their ports).
    @Test func clientsThatConnectWhileTheWorkerQueriesAreFreedWhenTheyLeave() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let paths = try await TestSwitch.start(scratch, ports: 32)
        let client = ManagementClient(
            socketPath: paths.management, session: ManagementSession(socketPath: paths.management))
        #expect(try await client.usablePorts() == 32)

        // The worker's side: queries one after the other, as a plug's attach polls for its port.
        let answered = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let queries = Task {
            while !stop.load(ordering: .relaxed) {
                if (try? await client.portEntries()) != nil { answered.add(1, ordering: .relaxed) }
            }
        }
        for index in 0..<20 {
            let pending = try HandMadeVDEClient.connect(
                ctlDir: paths.ctlDir, dataSocket: scratch.directory + "/client-\(index)")
            defer { pending.close() }
            // Two queries answered after the connect: the switch has accepted the client (its
            // listener was readable before they were sent) while they came and went.
            let mark = answered.load(ordering: .relaxed)
            let waited = await Host.eventually(timeout: .seconds(2)) { answered.load(ordering: .relaxed) >= mark + 2 }
            try #require(waited, "the queries go on")
            _ = try pending.requestPort()
            pending.close()
            // Its port freed before the next client comes: a client that leaves is a dropped
            // descriptor too, and this test is about the worker's.
            var inUse: [PortCounters] = []
            let freed = await Host.eventually(timeout: .seconds(2)) {
                inUse = (try? ManagementSession.blockingPorts(client)) ?? inUse
                return inUse.isEmpty
            }
            try #require(freed, "client \(index): the switch freed its port; in use: \(inUse.map(\.port))")
        }
        stop.store(true, ordering: .relaxed)
        await queries.value

    }

    /// A kept connection whose switch went (and another started at the same sockets) is
    /// replaced within the same exchange: the caller sees no error.
    @Test func aConnectionToASwitchThatRestartedIsReplaced() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let first = try await TestSwitch.start(scratch)
        let session = ManagementSession(socketPath: first.management)
        let client = ManagementClient(socketPath: first.management, session: session)
        #expect(try await client.usablePorts() == 8)

        kill(first.pid, SIGTERM)
        #expect(await Host.eventually { !Host.isAlive(first.pid) }, "the first switch exited")
        let second = try await TestSwitch.start(scratch, ports: 4)
        #expect(try await client.usablePorts() == 4, "the same client asks the new switch")
        #expect(second.pid != first.pid)
        #expect(session.idleConnections == 1, "the closed connection was replaced, not added to")
    }
}

/// A vde_switch of a test's own, as a daemon (in the foreground it would end at the end of its
/// standard input); its pid from its pid file.
private enum TestSwitch {
    struct Paths {
        var pid: pid_t
        var ctlDir: String
        var management: String
    }

    static func start(_ scratch: Scratch, ports: Int = 8) async throws -> Paths {
        let ctlDir = scratch.directory + "/ctl"
        let management = scratch.directory + "/mgmt"
        let pidFile = scratch.directory + "/switch.pid"
        unlink(pidFile)
        let started = Host.run(
            ["vde_switch", "-d", "-s", ctlDir, "-M", management, "-p", pidFile, "-n", "\(ports + 1)"])
        try #require(started.status == 0, "vde_switch starts: \(started.output)")
        var pid: pid_t = 0
        let running = await Host.eventually {
            pid = FileRead.text(pidFile).flatMap { pid_t($0.filter(\.isNumber)) } ?? 0
            return pid > 0
        }
        try #require(running, "vde_switch wrote its pid file")
        scratch.trackProcess(pid)
        let answers = await Host.eventually { UnixSocket.answers(management) && UnixSocket.answers(ctlDir + "/ctl") }
        try #require(answers, "vde_switch answers at \(management)")
        return Paths(pid: pid, ctlDir: ctlDir, management: management)
    }
}

extension ManagementSession {
    /// The ports in use, asked from a synchronous condition.
    fileprivate static func blockingPorts(_ client: ManagementClient) throws -> [PortCounters] {
        let session = try #require(client.session)
        let replies = try session.exchange(commands: ["port/allprint"], timeout: client.timeout).get()
        return PortReport.parse(try #require(replies.first).data)
    }
}

/// A VDE client done by hand, so that a test can pause between its connect and its request
/// (libvdeplug's `vde_open` does both at once). The request as vde_switch 2.3.2 reads it
/// (`struct request_v3`, packed, little-endian here): magic 0xfeedface, version 3, type 0 (a new
/// port), the client's data socket as a `sockaddr_un`, then a description. The reply is the
/// switch's data socket for the port, as a `sockaddr_un`.
private final class HandMadeVDEClient: Sendable {
    let control: UnixSocket
    let dataDescriptor: Int32
    let dataSocket: String
    private let closed = Mutex(false)

    private init(control: UnixSocket, dataDescriptor: Int32, dataSocket: String) {
        self.control = control
        self.dataDescriptor = dataDescriptor
        self.dataSocket = dataSocket
    }

    static func connect(ctlDir: String, dataSocket: String) throws -> HandMadeVDEClient {
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(descriptor >= 0, "socket: errno \(errno)")
        var address = socketAddress(dataSocket)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            Glibc.close(descriptor)
            throw HandMadeClientError("bind \(dataSocket): errno \(errno)")
        }
        let control: UnixSocket
        do {
            control = try UnixSocket.connect(to: ctlDir + "/ctl", timeout: .seconds(2))
        } catch {
            Glibc.close(descriptor)
            throw error
        }
        return HandMadeVDEClient(control: control, dataDescriptor: descriptor, dataSocket: dataSocket)
    }

    /// Sends the request and returns the switch's data socket for the new port.
    func requestPort() throws -> String {
        var request: [UInt8] = [0xce, 0xfa, 0xed, 0xfe, 3, 0, 0, 0, 0, 0, 0, 0]
        withUnsafeBytes(of: Self.socketAddress(dataSocket)) { request += $0 }
        request += Array("vdenw-hand-made".utf8)
        let deadline = ContinuousClock.now + .seconds(2)
        try control.send(request, deadline: deadline)
        let reply = try control.receiveMessage(deadline: deadline, limit: 4096) {
            $0.count >= MemoryLayout<sockaddr_un>.size
        }
        let path = reply.dropFirst(2).prefix { $0 != 0 }
        guard reply.count >= MemoryLayout<sockaddr_un>.size, !path.isEmpty else {
            throw HandMadeClientError("the switch replied \(reply.count) bytes, no data socket")
        }
        return String(decoding: path, as: UTF8.self)
    }

    /// Leaves: closes both sockets (the switch sees its control connection end) and removes the
    /// data socket's file. Once; later calls do nothing.
    func close() {
        let wasClosed = closed.withLock { done -> Bool in
            let was = done
            done = true
            return was
        }
        guard !wasClosed else { return }
        control.close()
        Glibc.close(dataDescriptor)
        unlink(dataSocket)
    }

    private static func socketAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        return address
    }
}

private struct HandMadeClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
