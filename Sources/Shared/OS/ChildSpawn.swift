import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Starts child processes from argv arrays (no shell), for children that live long (a switch, a
/// plug): unlike swift-subprocess's `run(...) { execution in }`, whose closure keeps a 1 s timer
/// chain running for the child's whole life (measured by worker-core: one wake-up a second per
/// child), nothing here wakes while the child runs: its exit comes from its pidfd
/// (``ProcessHandle``, ``DescriptorWatcher``), and it is reaped with ``reap(_:)``.
public enum ChildSpawn {
    /// How a child ended.
    public enum Exit: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let code): "exited with status \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// Starts `argv[0]` (a path) with `argv`, the environment of this process (with the entries
    /// of `environment` added or replaced), its stdin, stdout and stderr from the given
    /// descriptors (nil: /dev/null), in a process group of its own, with no signal blocked or
    /// ignored and no other descriptor inherited. Returns its pid.
    public static func start(
        _ argv: [String], environment: [String: String] = [:], standardInput: Int32? = nil,
        standardOutput: Int32? = nil, standardError: Int32? = nil
    ) throws(SystemCallError) -> pid_t {
        precondition(!argv.isEmpty)
        var arguments = argv.map { strdup($0) }
        arguments.append(nil)
        defer { for argument in arguments { free(argument) } }
        var variables: [UnsafeMutablePointer<CChar>?] = []
        if !environment.isEmpty {
            var inherited = environ
            while let entry = inherited.pointee {
                let text = String(cString: entry)
                let name = text.prefix { $0 != "=" }
                if environment[String(name)] == nil { variables.append(strdup(entry)) }
                inherited += 1
            }
            for (name, value) in environment.sorted(by: { $0.key < $1.key }) {
                variables.append(strdup(name + "=" + value))
            }
            variables.append(nil)
        }
        defer { for variable in variables { free(variable) } }
        var pid: pid_t = 0
        let code =
            variables.isEmpty
            ? clinux_spawn(
                &pid, argv[0], &arguments, environ, standardInput ?? -1, standardOutput ?? -1, standardError ?? -1)
            : clinux_spawn(
                &pid, argv[0], &arguments, &variables, standardInput ?? -1, standardOutput ?? -1,
                standardError ?? -1)
        guard code == 0 else { throw SystemCallError(call: "posix_spawn", subject: argv[0], errno: code) }
        unreaped.withLock { _ = $0.insert(pid) }
        return pid
    }

    /// ``start(_:environment:standardInput:standardOutput:standardError:)``, and a
    /// ``ProcessHandle`` on the child for a starter that waits for its exit: our child, not reaped
    /// until we do, so the pidfd holds it even if it has exited already. When no pidfd can be had
    /// (out of descriptors), the child's process group is killed and the child reaped before the
    /// error is thrown: no child runs that nobody watches.
    public static func startWatched(
        _ argv: [String], environment: [String: String] = [:], standardInput: Int32? = nil,
        standardOutput: Int32? = nil, standardError: Int32? = nil
    ) throws(SystemCallError) -> ProcessHandle {
        let pid = try start(
            argv, environment: environment, standardInput: standardInput, standardOutput: standardOutput,
            standardError: standardError)
        do {
            return try ProcessHandle(pid: pid)
        } catch {
            kill(-pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            _ = unreaped.withLock { $0.remove(pid) }
            throw error
        }
    }

    /// A process started elsewhere that is now our child (a worker the fork server forked,
    /// re-parented to this subreaper), with the pidfd that came with it: from now on its starter
    /// here reaps it with ``reap(_:)``, and a reaper of orphans leaves it alone.
    public static func takeOver(pid: pid_t, pidfd: Int32) -> ProcessHandle {
        unreaped.withLock { _ = $0.insert(pid) }
        return ProcessHandle(pid: pid, pidfd: pidfd)
    }

    /// The children started here and not yet reaped by ``reap(_:)``: their starter reaps them,
    /// so a reaper of orphans (the supervisor's `OrphanReaper`) leaves them alone.
    private static let unreaped = Mutex<Set<pid_t>>([])

    /// True when `pid` is a child started here that its starter has not reaped yet.
    public static func willBeReapedByItsStarter(_ pid: pid_t) -> Bool {
        unreaped.withLock { $0.contains(pid) }
    }

    /// Reaps the exited child behind `handle` (which must be our child); nil when it has not
    /// exited yet or was reaped already.
    public static func reap(_ handle: ProcessHandle) -> Exit? {
        handle.withDescriptor { fd -> Exit? in
            var code: Int32 = 0
            var signaled: Int32 = 0
            guard fd >= 0, clinux_reap_pidfd(fd, &code, &signaled) == 1 else { return nil }
            _ = unreaped.withLock { $0.remove(handle.pid) }
            return signaled != 0 ? .signaled(code) : .exited(code)
        }
    }
}
