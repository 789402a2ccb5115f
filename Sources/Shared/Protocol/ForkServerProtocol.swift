#if canImport(Glibc)
    import Glibc
#endif

/// What the supervisor and the worker fork server (`vde-networker --fork-server`) say to each
/// other on the seqpacket socket that is the server's stdin (docs/worker-protocol.md, "The fork
/// server"), and the command lines of both: one message per request, one per reply.
///
/// - Request: the network ID's bytes, with two descriptors: the new worker's stdin and stdout.
/// - Reply: ``Reply`` in 8 bytes (the worker's pid and an errno value, native byte order; they
///   never leave the machine), with the worker's pidfd attached when the fork succeeded.
public enum ForkServerProtocol {
    /// The reply to one request.
    public struct Reply: Equatable, Sendable {
        /// The forked worker's pid; 0 when the fork failed.
        public var pid: Int32
        /// Why the fork failed (an errno value); 0 on success.
        public var errno: Int32

        public init(pid: Int32, errno: Int32) {
            self.pid = pid
            self.errno = errno
        }

        public static let size = 8

        public var bytes: [UInt8] {
            withUnsafeBytes(of: (pid, errno)) { Array($0) }
        }

        /// The reply in `bytes`; nil when they are not one.
        public init?(bytes: [UInt8]) {
            guard bytes.count == Self.size else { return nil }
            var fields: (Int32, Int32) = (0, 0)
            withUnsafeMutableBytes(of: &fields) { $0.copyBytes(from: bytes) }
            guard (fields.0 > 0 && fields.1 == 0) || (fields.0 == 0 && fields.1 > 0) else { return nil }
            (pid, errno) = fields
        }
    }

    /// The longest request: a network ID.
    public static let maxRequestBytes = NetworkID.maxBytes

    /// A worker's command line (spawned or forked): `vde-networker --network-id ID --log-level
    /// LEVEL --run-dir DIR`, and `--fork-worker` at the end of a forked one.
    public static func workerArguments(
        executable: String, networkID: NetworkID, logLevel: String, runDir: String, forked: Bool = false
    ) -> [String] {
        workerArguments(
            executable: executable, id: networkID.rawValue, logLevel: logLevel, runDir: runDir, forked: forked)
    }

    private static func workerArguments(
        executable: String, id: String, logLevel: String, runDir: String, forked: Bool
    ) -> [String] {
        [executable, "--network-id", id, "--log-level", logLevel, "--run-dir", runDir]
            + (forked ? ["--fork-worker"] : [])
    }

    /// A spare worker's command line (the fork server's `ForkServer.Spare`, forked before its
    /// network is known): shorter than the server's, so it fits where the server's was.
    public static func spareArguments(executable: String, logLevel: String, runDir: String) -> [String] {
        [executable, "--fork-spare", "--log-level", logLevel, "--run-dir", runDir]
    }

    /// The fork server's command line. `--argv-room` reserves the bytes a forked worker's own
    /// command line needs beyond the server's (``workerArguments(executable:networkID:logLevel:runDir:forked:)``
    /// with the longest network ID), see ``ProcessCommandLine``.
    public static func serverArguments(executable: String, logLevel: String, runDir: String) -> [String] {
        let server = [executable, "--fork-server", "--log-level", logLevel, "--run-dir", runDir]
        let longest = workerArguments(
            executable: executable, id: String(repeating: "0", count: NetworkID.maxBytes), logLevel: logLevel,
            runDir: runDir, forked: true)
        func bytes(_ arguments: [String]) -> Int { arguments.reduce(0) { $0 + $1.utf8.count + 1 } }
        let room = max(1, bytes(longest) - bytes(server) - "--argv-room".utf8.count - 2 + 1)
        return server + ["--argv-room", String(repeating: "_", count: room)]
    }
}
