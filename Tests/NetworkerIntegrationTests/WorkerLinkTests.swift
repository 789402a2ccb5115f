import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// A supervisor's end of a worker's socket (`NetworkPaths.workerSocket`), as a new supervisor
/// that adopts the worker uses it: lines in, lines out, on one connection.
final class SocketSupervisor {
    let socket: UnixSocket
    private var buffered: [UInt8] = []
    private var nextID: UInt64 = 1000

    init(path: String) throws {
        socket = try UnixSocket.connect(to: path, timeout: .seconds(2))
    }

    deinit { socket.close() }

    /// The next message the worker sends, within `timeout`.
    func next(timeout: Duration = .seconds(10)) throws -> WorkerMessage {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let newline = buffered.firstIndex(of: 0x0a) {
                let line = Array(buffered[..<newline])
                buffered.removeSubrange(...newline)
                return try JSONCoding.decode(WorkerMessage.self, from: line)
            }
            let chunk = try socket.receive(deadline: deadline)
            guard !chunk.isEmpty else { throw HarnessError("the worker closed the connection") }
            buffered += chunk
        }
    }

    /// Sends `command` and returns its reply or failure, skipping events.
    func request(_ command: WorkerCommand, timeout: Duration = .seconds(15)) throws -> WorkerMessage {
        let id = nextID
        nextID += 1
        try socket.send(
            Array((try JSONCoding.string(WorkerRequest(id: id, command)) + "\n").utf8), deadline: .now + timeout)
        let deadline = ContinuousClock.now + timeout
        while true {
            let message = try next(timeout: deadline - .now)
            switch message {
            case .reply(let replyID, _), .failure(let replyID, _): if replyID == id { return message }
            case .event: continue
            }
        }
    }

    /// True once the worker has closed the connection (EOF) within `timeout`.
    func closedByPeer(timeout: Duration = .seconds(10)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let chunk = try? socket.receive(deadline: deadline) else { return false }
            if chunk.isEmpty { return true }
        }
        return false
    }
}

/// The worker's links (docs/worker-protocol.md, "Links"): the end of its input leaves the data
/// path running and the worker waiting on its socket for a new supervisor; `shutdown` over that
/// socket still stops everything; SIGTERM detaches and exits; a second worker never touches a
/// network another worker serves.
extension WorkerProcessTests {
    @Test func endOfInputLeavesTheDataPathAndTheWorkerWaitsOnItsSocket() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        let started = try await start(worker, spec)
        let switchPID = try #require(started.switch?.pid)
        let a = endpoint(scratch, "a")
        let plugPID = try #require(try await add(worker, a).plugPID)
        #expect(Host.exists(spec.paths.workerSocket), "start makes the worker's socket")

        worker.closeInput()
        #expect(
            await Host.eventually {
                FileRead.text(worker.logPath)?.contains("waiting for a supervisor at \(spec.paths.workerSocket)")
                    == true
            }, "the worker should say it waits: \(worker.logTail())")
        #expect(await worker.waitForExit(timeout: .milliseconds(200)) == nil, "the worker must keep running")
        #expect(Host.isAlive(switchPID) && Host.isAlive(plugPID), "the switch and the plug keep running")

        // A new supervisor connects: hello first, then `start` answers with what runs now.
        let link = try SocketSupervisor(path: spec.paths.workerSocket)
        guard case .event(.hello(let pid, _)) = try link.next() else {
            Issue.record("the first line on a new link must be hello")
            return
        }
        #expect(pid == worker.pid)
        guard case .reply(_, .started(let status, let endpoints)) = try link.request(.start(switch: spec, restore: [a]))
        else {
            Issue.record("start over the socket should answer started: \(worker.logTail())")
            return
        }
        #expect(status.pid == switchPID, "the same switch")
        #expect(endpoints.map(\.plugPID) == [plugPID], "the same plug")

        // `shutdown` over the socket stops everything; the worker exits and removes its socket.
        guard case .reply(_, .stopped) = try link.request(.shutdown) else {
            Issue.record("shutdown over the socket should answer stopped")
            return
        }
        #expect(await worker.waitForExit() == 0)
        #expect(await Host.eventually { !Host.isAlive(switchPID) && !Host.isAlive(plugPID) })
        #expect(!Host.exists(spec.paths.workerSocket), "the socket goes with the worker")
    }

    @Test func aSupervisorThatLeavesAgainLeavesTheWorkerWaiting() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        let switchPID = try #require(try await start(worker, spec).switch?.pid)
        worker.closeInput()
        for round in 1...2 {
            let link = try SocketSupervisor(path: spec.paths.workerSocket)
            guard case .event(.hello) = try link.next() else {
                Issue.record("round \(round): no hello")
                return
            }
            guard case .reply(_, .pong) = try link.request(.ping) else {
                Issue.record("round \(round): no pong")
                return
            }
            // The supervisor goes (its connection closes): the worker waits again.
        }
        #expect(Host.isAlive(switchPID))
        #expect(await worker.waitForExit(timeout: .milliseconds(200)) == nil)
    }

    @Test func aWorkerRefusesANetworkThatAnotherWorkerServes() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try ownSpec(scratch, first)
        let switchPID = try #require(try await start(first, spec).switch?.pid)

        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        let reply = try await second.request(.start(switch: spec, restore: []))
        #expect(reply.ok == false)
        #expect(reply.error?.code == .conflict, "\(reply.error?.message ?? "")")
        #expect(
            reply.error?.message.contains("another vde-networker already serves network") == true,
            "\(reply.error?.message ?? "")")
        #expect(Host.isAlive(switchPID), "the first worker's switch is untouched")
        #expect(Host.exists(spec.paths.workerSocket), "the first worker's socket is untouched")
        #expect(try await status(first).switch?.pid == switchPID)
    }

    @Test func aStaleSocketIsReplaced() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        // What a killed worker leaves: a socket file nobody listens on.
        Host.run(["mkdir", "-p", spec.paths.networkDir])
        let stale = try UnixListener.bind(spec.paths.workerSocket)
        let staleFD = dup(stale.fd)
        stale.close()
        close(staleFD)
        let listener = try UnixListener.bind(spec.paths.workerSocket)
        close(listener.fd)  // the file stays, refusing connections
        #expect(UnixSocket.probe(spec.paths.workerSocket) == ECONNREFUSED)

        _ = try await start(worker, spec)
        #expect(UnixSocket.answers(spec.paths.workerSocket), "the worker listens there now")
        try await shutDown(worker, spec: spec)
        #expect(!Host.exists(spec.paths.workerSocket))
    }

    @Test func sigtermDetachesExitsAndRemovesTheSocket() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)
        _ = try await add(worker, endpoint(scratch, "a"))

        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
        #expect(!Host.exists(spec.paths.workerSocket), "the socket goes with the worker")
        #expect(FileRead.text(worker.logPath)?.contains("detaching (SIGTERM)") == true, "\(worker.logTail())")
    }

    @Test func endOfInputBeforeStartExits() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        worker.closeInput()
        #expect(await worker.waitForExit() == 0)
    }
}
