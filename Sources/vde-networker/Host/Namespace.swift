import Shared

/// Why something could not be done inside a container's network namespace.
struct NamespaceError: ReportableError, CustomStringConvertible {
    var sandboxKey: String
    var reason: String

    var description: String { "in the network namespace \(sandboxKey): \(reason)" }
    var vdeError: VDEError { .system(description) }
}

/// A network namespace named by a path (dockerd's sandbox key, `/var/run/docker/netns/abc`, or
/// `/var/run/netns/NAME`), entered with `nsenter --net=PATH -- ...`.
///
/// nsenter with only `--net` does not fork: it calls setns and execs the command, so the pid of
/// the started program is the pid nsenter was started with.
struct NetworkNamespace: Sendable {
    var path: String

    /// True while the namespace file exists (dockerd removes it when the container is gone).
    var exists: Bool { FileSystem.exists(path) }

    /// `nsenter --net=PATH -- argv...`
    func command(_ argv: [String], nsenter: String) -> [String] {
        [nsenter, "--net=" + path, "--"] + argv
    }

    /// The interfaces inside the namespace (`ip -o link show` run there).
    func links(runner: CommandRunner, executables: Executables) async throws(NamespaceError) -> [LinkInfo] {
        do {
            let result = try await runner.check(
                command([executables.ip, "-o", "link", "show"], nsenter: executables.nsenter))
            return LinkList.parse(result.standardOutput)
        } catch {
            throw NamespaceError(sandboxKey: path, reason: "cannot list links: \(error)")
        }
    }
}
