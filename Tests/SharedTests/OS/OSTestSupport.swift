import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A fresh directory under /tmp, removed (with what the test left in it) by ``remove()``.
struct ScratchDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/os-tests-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemCallError.last("mkdtemp") }
        path = String(cString: made)
    }

    func remove() {
        var stack = [path]
        var directories: [String] = []
        while let next = stack.popLast() {
            directories.append(next)
            for name in FileSystem.listDirectory(next) ?? [] {
                let child = next + "/" + name
                if FileSystem.isDirectory(child) { stack.append(child) } else { unlink(child) }
            }
        }
        for directory in directories.reversed() { rmdir(directory) }
    }
}

/// Starts `argv` (a path and its arguments) as a child of the test process; its stdout goes to
/// `standardOutput` when given. Returns its pid.
func spawnChild(_ argv: [String], standardOutput: Int32? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let standardOutput { posix_spawn_file_actions_adddup2(&actions, standardOutput, 1) }
    // The test runner's threads block signals; the child starts with none blocked or ignored.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var arguments = argv.map { strdup($0) }
    arguments.append(nil)
    defer { for argument in arguments { free(argument) } }
    var pid: pid_t = 0
    let code = posix_spawn(&pid, argv[0], &actions, &attributes, &arguments, environ)
    guard code == 0 else { throw SystemCallError(call: "posix_spawn", subject: argv[0], errno: code) }
    return pid
}

/// Reaps the child `pid` (blocking): tests leave no zombies.
func reap(_ pid: pid_t) {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
}

/// A count that closures on other threads bump.
final class EventCount: Sendable {
    private let count = Atomic<Int>(0)
    func bump() { count.add(1, ordering: .sequentiallyConsistent) }
    var value: Int { count.load(ordering: .sequentiallyConsistent) }
}
