import Foundation
import Glibc

/// A program the recovery tests start and stop themselves, outside a scope: a supervisor
/// that is killed with SIGKILL and started again on the same state, or a pinger stopped
/// with SIGINT so that it prints its summary. Started with posix_spawn in its own process
/// group, stdin from /dev/null, stdout and stderr appended to a file, only fds 0-2 inherited.
final class RecoverySpawned: Sendable {
    let argv: [String]
    let pid: pid_t
    let outputPath: String
    private let exitStatus = Locked<Int32?>(nil)

    init(_ argv: [String], outputPath: String) throws {
        precondition(!argv.isEmpty)
        self.argv = argv
        self.outputPath = outputPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // glibc >= 2.34 has it, but Swift's Glibc module does not export it.
        if let closeFrom = RecoverySpawned.addCloseFrom { _ = closeFrom(&actions, 3) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Own process group, no blocked signals, default dispositions (the test runner may
        // ignore SIGPIPE or SIGINT; ping needs SIGINT to print its summary).
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, argv[0], &actions, &attributes, cArgs, environ)
        guard rc == 0 else {
            throw AcceptanceFailure(
                "posix_spawn \(argv.joined(separator: " ")) failed: \(String(cString: strerror(rc)))")
        }
        pid = child
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    /// Reaps the process if it has exited; true while it still runs.
    var isRunning: Bool {
        exitStatus.withLock { status in
            if status != nil { return false }
            var raw: Int32 = 0
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid {
                status = raw
                return false
            }
            return r == 0
        }
    }

    /// The raw wait status once it has exited and been reaped.
    var waitStatus: Int32? {
        _ = isRunning
        return exitStatus.value
    }

    func signal(_ sig: Int32) {
        guard isRunning else { return }
        kill(pid, sig)
    }

    /// Waits (polling) until it has exited and is reaped; false when the deadline passed.
    @discardableResult
    func waitForExit(deadline: Duration) async -> Bool {
        (try? await Poll.until("\(argv[0]) (pid \(pid)) to exit", deadline: deadline, every: .milliseconds(20)) {
            !isRunning
        }) != nil
    }

    /// `sig`, then SIGKILL to its process group when it outlives `grace`. Returns the steps taken.
    @discardableResult
    func stop(_ sig: Int32 = SIGTERM, grace: Duration = .seconds(10)) async -> [String] {
        guard isRunning else { return [] }
        kill(pid, sig)
        if await waitForExit(deadline: grace) { return [signalName(sig)] }
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
        await waitForExit(deadline: .seconds(10))
        return [signalName(sig), "SIGKILL"]
    }

    func output(_ maxBytes: Int = 8000) -> String {
        TempDir.readText(outputPath).map { String($0.suffix(maxBytes)) } ?? ""
    }

    private func signalName(_ sig: Int32) -> String {
        switch sig {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGKILL: "SIGKILL"
        default: "signal \(sig)"
        }
    }
}

/// What /proc says about every process: pid, state letter, parent, argv (empty for zombies).
struct RecoveryProcess: Sendable, CustomStringConvertible {
    var pid: Int32
    var state: Character
    var parent: Int32
    /// The kernel's command name (the only name a zombie still has).
    var comm: String
    var argv: [String]

    var isZombie: Bool { state == "Z" || state == "X" }
    var program: String { argv.first.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? comm }
    var description: String {
        "\(pid) [\(state), parent \(parent)] " + (argv.isEmpty ? "(\(comm))" : argv.joined(separator: " "))
    }

    static let vdePrograms: Set<String> = [
        "vde_switch", "vde_plug2tap", "vde_plug", "vde-networker", "vde-supervisor", "nsenter",
    ]

    static func all() -> [Int32: RecoveryProcess] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [:] }
        var result: [Int32: RecoveryProcess] = [:]
        for entry in entries {
            guard let pid = Int32(entry), let stat = TempDir.readText("/proc/\(pid)/stat"),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { continue }
            let comm = String(stat[stat.index(after: open)..<close])
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count >= 2, let state = fields[0].first, let parent = Int32(fields[1]) else { continue }
            let raw = TempDir.readBytes("/proc/\(pid)/cmdline") ?? []
            var argv = raw.split(separator: 0, omittingEmptySubsequences: false).map {
                String(decoding: $0, as: UTF8.self)
            }
            if argv.last == "" { argv.removeLast() }
            result[pid] = RecoveryProcess(pid: pid, state: state, parent: parent, comm: comm, argv: argv)
        }
        return result
    }

    /// True when `root` is `pid` or one of its ancestors, every process on the way alive.
    static func descends(_ pid: Int32, from root: Int32, in table: [Int32: RecoveryProcess]) -> Bool {
        var current = pid
        var hops = 0
        while let p = table[current], hops < 64 {
            if p.isZombie { return false }
            if current == root { return true }
            if p.parent <= 1 { return false }
            current = p.parent
            hops += 1
        }
        return false
    }
}
