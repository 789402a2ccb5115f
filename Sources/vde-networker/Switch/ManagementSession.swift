import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's connections to a switch's management socket, kept open and used for every
/// exchange with that switch (``ManagementClient/session``): an exchange takes an idle one, or
/// makes one when all are busy (a status while an add waits on a hung switch must not wait behind
/// it), and puts it back after. So a worker keeps as many as it ever ran exchanges at once (one,
/// mostly; a few while plugs attach during a status).
///
/// Why kept: vde_switch 2.3.2 loses a client whose connection it has accepted when, before it
/// reads that client's request, it drops another descriptor from its poll list. Its `remove_fd`
/// leaves the index of the last descriptor pointing one past the end, so the request's
/// `mainloop_set_private_data` stores the new port's endpoint in another slot; when the client
/// leaves, the switch closes its connection but never its port, which stays `ACTIVE` with the
/// client's endpoint for good. A management connection per exchange was such a drop at every
/// query, and the worker queries while clients connect: a plug that attaches (the worker polls
/// for its port), the worker's own probe of a switch it just started. Measured
/// (ManagementSessionTests): 20 clients, each connecting while queries run, waiting for two of
/// them, then asking for a port and leaving: with a connection per query 16, 16 and 20 of them
/// kept their ports (three runs); with kept connections, none. In CI it showed as a port held by
/// the worker's probe for good (RecoveryTests failed so in two `.ci/run`s). The same drop fits
/// the exited plugs' ports that ``Worker/releasePort(of:grace:)`` was written for.
///
/// A failed exchange closes its connection (the next reply could no longer be told from the rest
/// of this one); a kept connection the switch closed (it exited or restarted) is replaced once
/// within the exchange.
final class ManagementSession: Sendable {
    let socketPath: String
    private let idle = Mutex<[UnixSocket]>([])

    init(socketPath: String) { self.socketPath = socketPath }

    deinit { idle.withLock { for socket in $0 { socket.close() } } }

    /// Kept connections not in use now (for tests).
    var idleConnections: Int { idle.withLock { $0.count } }

    /// Runs `commands` on a kept connection, all within `timeout`. Blocks: call it on a thread
    /// of its own (``Blocking/run(_:)``).
    func exchange(commands: [String], timeout: Duration, console: ManagementConsole = .switch)
        -> Result<[ManagementReply], ManagementError>
    {
        let deadline = ContinuousClock.now + timeout
        var kept = idle.withLock { $0.popLast() }
        while true {
            let socket: UnixSocket
            if let kept {
                socket = kept
            } else {
                switch ManagementClient.connect(
                    path: socketPath, deadline: deadline, timeout: timeout, console: console)
                {
                case .success(let connected): socket = connected
                case .failure(let error): return .failure(error)
                }
            }
            switch ManagementClient.converse(
                on: socket, commands: commands, deadline: deadline, timeout: timeout, console: console)
            {
            case .success(let replies):
                idle.withLock { $0.append(socket) }
                return .success(replies)
            case .failure(let failure):
                socket.close()
                guard kept != nil, failure.connectionLost else { return .failure(failure.error) }
                kept = nil
            }
        }
    }
}

/// One ``ManagementSession`` per management socket path, for the life of the worker (a worker
/// talks to one switch: one session).
final class ManagementSessions: Sendable {
    private let sessions = Mutex<[String: ManagementSession]>([:])

    init() {}

    func session(for path: String) -> ManagementSession {
        sessions.withLock { sessions in
            if let existing = sessions[path] { return existing }
            let made = ManagementSession(socketPath: path)
            sessions[path] = made
            return made
        }
    }
}
