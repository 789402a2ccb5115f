import ArgumentParser
import Glibc
import Shared

/// The flags of every command that runs networks (`run`, `stop-networks`): where the state
/// lives, where the networks' run dirs are, and which worker executable to start.
struct NetworkStoreOptions: ParsableArguments {
    @Option(help: "Where the state file lives.")
    var stateDir: String = SupervisorConfiguration.defaultStateDir

    @Option(help: "Where networks' own switches put their sockets.")
    var runDir: String = SupervisorConfiguration.defaultRunDir

    @Option(help: "The vde-networker executable (default: next to vde-supervisor, else in ../lib/vde-supervisor/).")
    var networker: String?

    func validate() throws {
        for (flag, path) in [("--state-dir", stateDir), ("--run-dir", runDir)] {
            guard path.hasPrefix("/") else { throw ValidationError("\(flag) must be an absolute path") }
        }
    }

    /// `--networker`, else the installation's `vde-networker` (``Installation/helperCandidates(named:besideExecutable:)``);
    /// checked to be executable.
    func networkerPath() throws(VDEError) -> String {
        if let networker {
            guard access(networker, X_OK) == 0 else {
                throw .invalid("vde-networker not found or not executable at \(networker); pass --networker PATH")
            }
            return networker
        }
        let candidates = Installation.helperCandidates(
            named: "vde-networker", besideExecutable: ProcFS.ownExecutable() ?? "/usr/local/bin/vde-supervisor")
        guard let found = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw .invalid(
                "vde-networker not found or not executable at \(candidates.joined(separator: " or ")); pass --networker PATH"
            )
        }
        return found
    }
}
