import Glibc
import Logging
import Shared

/// Finds a worker of a network that runs already (left by an earlier supervisor: killed, or
/// stopped with SIGTERM, which leaves workers) so that the supervisor adopts it instead of
/// spawning a new one, and the data path is not touched (docs/recovery.md, "A new supervisor").
///
/// The worker listens on `NetworkPaths.workerSocket` once started. Adopted only when, beyond
/// doubt, it is this network's worker: the socket answers, the kernel names the peer
/// (`SO_PEERCRED`), a pidfd holds that very process, and its command line is
/// `vde-networker --network-id <ID>`. Anything else is not adopted (and, if something answers
/// there, the spawned worker's `start` fails with a conflict rather than touch the network).
enum WorkerAdoption {
    /// The connection and the process, or nil when no worker of this network answers.
    static func connect(networkID: NetworkID, paths: NetworkPaths, logger: Logger) -> (UnixSocket, ProcessHandle)? {
        let path = paths.workerSocket
        guard FileSystem.isSocket(path) else { return nil }
        let socket: UnixSocket
        do {
            socket = try UnixSocket.connect(to: path, timeout: .seconds(1))
        } catch {
            // ECONNREFUSED: a stale socket of a worker that died; the new worker replaces it.
            logger.debug("no worker answers at \(path): \(error)")
            return nil
        }
        let process: ProcessHandle
        do {
            let peer = try UnixListener.peer(of: socket.fd)
            process = try ProcessHandle(pid: peer.pid)
            guard peer.uid == geteuid() else {
                throw AdoptionRefusal("the process on \(path) (pid \(peer.pid)) runs as uid \(peer.uid), not ours")
            }
            let arguments = ProcFS.arguments(of: peer.pid) ?? []
            guard isWorker(arguments, of: networkID) else {
                throw AdoptionRefusal(
                    "the process on \(path) (pid \(peer.pid)) is not 'vde-networker --network-id \(networkID.rawValue)': \(UntrustedText(arguments.joined(separator: " ")))"
                )
            }
            // Checked after the pidfd was opened: the handle holds the process whose command
            // line we read (a pid reused in between would have exited the process behind it).
            guard !process.hasExited else {
                throw AdoptionRefusal("the worker on \(path) (pid \(peer.pid)) exited meanwhile")
            }
        } catch {
            logger.error("not adopting the worker at \(path): \(error)")
            socket.close()
            return nil
        }
        logger.notice("adopting the running worker", metadata: ["pid": "\(process.pid)", "socket": "\(path)"])
        return (socket, process)
    }

    /// True for `.../vde-networker --network-id ID ...`.
    static func isWorker(_ arguments: [String], of networkID: NetworkID) -> Bool {
        guard let program = arguments.first, FileSystem.lastComponent(of: program) == "vde-networker" else {
            return false
        }
        guard let flag = arguments.firstIndex(of: "--network-id"), flag + 1 < arguments.count else { return false }
        return arguments[flag + 1] == networkID.rawValue
    }
}

/// A worker that answers on a network's socket but is not adopted, and why.
struct AdoptionRefusal: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
