import Logging
import Shared

/// The worker's command line: `vde-networker --network-id ID [--log-level LEVEL] [--run-dir DIR]`,
/// `vde-networker --fork-server ...` (``ForkServer``), or `--help`, or `--version`. The network
/// ID is in argv so that `ps` shows which network a worker serves (a forked worker writes its
/// own command line over the fork server's, ending in `--fork-worker`).
///
/// Read by hand, not with swift-argument-parser as `vde-supervisor` is: the worker runs once per
/// network, its one caller is the supervisor, and ArgumentParser's type metadata and witness
/// caches cost every worker 6 pages of `.bss` and its share of the heap (docs/benchmarks.md,
/// "Issue 17: towards 1 MiB per network").
struct WorkerArguments: Equatable, Sendable {
    var networkID: NetworkID
    var logLevel: Logger.Level = .info

    /// What a command line asks for.
    enum Request: Equatable, Sendable {
        case serve(WorkerArguments)
        /// `--fork-server`: fork workers on request (``ForkServer``), each with this log level.
        case forkServer(logLevel: Logger.Level, runDir: String)
        case help
        case version
    }

    /// A command line that cannot be run; the message names the option and what it accepts.
    struct UsageError: Error, Equatable, Sendable, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    static let usage = """
        Usage: vde-networker --network-id ID [--log-level LEVEL] [--run-dir DIR]
               vde-networker --fork-server --run-dir DIR [--log-level LEVEL] [--argv-room TEXT]
               vde-networker --help | --version

        Runs the VDE switch and plugs of one Docker network (started by vde-supervisor).
        Requests arrive as JSON lines on stdin; replies and events leave on stdout; logs go to stderr.

          --network-id ID     the Docker network this worker serves (1 to 128 letters and digits)
          --log-level LEVEL   \(LogSetup.levels.joined(separator: ", ")) (default: info)
          --run-dir DIR       ignored: the network's directories come with the start request
                              (kept so that a supervisor that passes it can start this worker)
          --fork-server       fork workers for the supervisor: requests come on stdin, a seqpacket
                              socket, each a network ID with the worker's stdin and stdout
          --argv-room TEXT    ignored: room for a forked worker's own command line
          --fork-worker       ignored: marks a worker forked by the fork server
                              (--fork-spare marks one forked before its network was known)
        """

    /// Reads `arguments` (without the program's name). Each option takes its value as the next
    /// argument or after `=`; an option given twice takes the last value.
    static func parse(_ arguments: [String]) throws(UsageError) -> Request {
        var networkID: NetworkID?
        var logLevel = Logger.Level.info
        var forkServer = false
        var runDir: String?
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            let (name, inlineValue) = split(argument)
            switch name {
            case "--help", "-h": return .help
            case "--version": return .version
            case "--fork-server" where inlineValue == nil: forkServer = true
            case "--fork-worker" where inlineValue == nil: break
            case "--fork-spare" where inlineValue == nil:
                throw UsageError(
                    message:
                        "--fork-spare marks a fork server's spare worker, which waits for its network from the server; it is not run by hand"
                )
            case "--network-id", "--log-level", "--run-dir", "--argv-room":
                guard let value = inlineValue ?? rest.popFirst() else {
                    throw UsageError(message: "\(name) needs a value")
                }
                switch name {
                case "--network-id":
                    do {
                        networkID = try NetworkID(value)
                    } catch {
                        throw UsageError(message: "--network-id: \(error)")
                    }
                case "--log-level":
                    guard let level = Logger.Level(rawValue: value) else {
                        let levels = LogSetup.levels.joined(separator: ", ")
                        throw UsageError(message: "--log-level must be one of \(levels), not \(value.debugDescription)")
                    }
                    logLevel = level
                case "--run-dir":
                    guard value.hasPrefix("/") else { throw UsageError(message: "--run-dir must be an absolute path") }
                    runDir = value
                default:
                    break
                }
            default:
                throw UsageError(message: "unknown argument \(argument.debugDescription)")
            }
        }
        if forkServer {
            guard networkID == nil else {
                throw UsageError(message: "--fork-server serves many networks: no --network-id")
            }
            guard let runDir else {
                throw UsageError(message: "--fork-server needs --run-dir (forked workers show it)")
            }
            return .forkServer(logLevel: logLevel, runDir: runDir)
        }
        guard let networkID else { throw UsageError(message: "--network-id is required") }
        return .serve(WorkerArguments(networkID: networkID, logLevel: logLevel))
    }

    private static func split(_ argument: String) -> (name: String, value: String?) {
        guard argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") else { return (argument, nil) }
        return (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
    }
}
