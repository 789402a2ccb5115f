import Glibc
import Logging
import Shared

@testable import vde_supervisor

/// A stand-in for vde-networker in tests of the plugin actor and its real ``NetworkWorker``: a
/// shell script that appends every command line it reads to `<directory>/commands` and answers
/// it by the first `case` pattern that matches (`reply=...`), `shutdown` by exiting, anything
/// else with `pong`. Before the cases, `$id` holds the request's id and `$ep` its endpoint ID.
/// No root needed: nothing touches the network.
struct StandInWorker {
    let directory: String

    /// A fresh directory `/tmp/vde-<name>-test-XXXXXX` for one test.
    init(name: String) {
        var template = Array("/tmp/vde-\(name)-test-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer {
            $0.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/nonexistent"
        }
    }

    /// Writes the script with `cases` (shell `case` arms) after `prelude` (shell lines), and
    /// returns a plugin whose workers are that script.
    func plugin(prelude: String = "", cases: String) throws -> VDEPlugin {
        let version = WorkerProtocol.version
        let script = """
            #!/bin/sh
            while read -r line; do
                printf '%s\\n' "$line" >> \(directory)/commands
                id=$(printf '%s' "$line" | sed -n 's/.*"id":\\([0-9]*\\).*/\\1/p')
                ep=$(printf '%s' "$line" | sed -n 's/.*"endpointID":"\\([^"]*\\)".*/\\1/p')
            \(prelude)
                case "$line" in
            \(cases)
                *'"command":{"start"'*) reply='{"started":{"endpoints":[],"switch":{"ctlDir":"/x","numPorts":4,"owned":true}}}' ;;
                *'"command":{"shutdown"'*) printf '{"v":\(version),"id":%s,"reply":{"stopped":{}}}\\n' "$id"; exit 0 ;;
                *) reply='{"pong":{}}' ;;
                esac
                printf '{"v":\(version),"id":%s,"reply":%s}\\n' "$id" "$reply"
            done

            """
        let path = directory + "/worker"
        try FileSystem.write(Array(script.utf8), to: path, mode: 0o755)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try VDEPlugin(
            configuration: SupervisorConfiguration(
                socketPath: directory + "/vde.sock", stateDir: directory + "/state", runDir: directory + "/run",
                networkerPath: path),
            logger: logger)
    }

    /// The command lines of one kind the worker got (`startCapture`, `setLink`, ...).
    func commands(_ kind: String) -> [String] {
        let text = (try? FileSystem.read(directory + "/commands", limit: 1 << 20)).map {
            String(decoding: $0, as: UTF8.self)
        }
        return (text ?? "").split(separator: "\n").map(String.init).filter { $0.contains("\"command\":{\"\(kind)\"") }
    }

    func remove() {
        _ = Glibc.system("rm -rf -- '\(directory)'")
    }
}

extension VDEPlugin {
    /// CreateNetwork as dockerd sends it for `docker network create -d vde -o k=v ...`.
    func createNetwork(id: String, options: [String: String] = [:]) async throws {
        _ = try await createNetwork(
            DockerAPI.CreateNetworkRequest(
                NetworkID: try NetworkID(id), Options: [DockerAPI.genericOptionsKey: .map(options)]))
    }
}
