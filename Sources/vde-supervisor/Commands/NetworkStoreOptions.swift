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

    @Option(help: "The vde-networker executable (default: next to vde-supervisor).")
    var networker: String?

    func validate() throws {
        for (flag, path) in [("--state-dir", stateDir), ("--run-dir", runDir)] {
            guard path.hasPrefix("/") else { throw ValidationError("\(flag) must be an absolute path") }
        }
    }

    /// `--networker`, else `vde-networker` next to this executable; checked to be executable.
    func networkerPath() throws(VDEError) -> String {
        let path = networker ?? RunCommand.siblingExecutable("vde-networker")
        guard access(path, X_OK) == 0 else {
            throw .invalid("vde-networker not found or not executable at \(path); pass --networker PATH")
        }
        return path
    }
}
