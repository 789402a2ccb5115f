import CLinux
import Glibc
import Logging
import ServiceLifecycle

/// Keeps every process the supervisor started in its process tree.
///
/// The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): what a dead worker leaves
/// behind (a switch or plug on its way out) is re-parented to the supervisor rather than to
/// init, so an operator sees it under the service and systemd's cgroup keeps it. Such adopted
/// children are not swift-subprocess's to reap, so this service reaps them: a child that has
/// been a zombie for two consecutive scans is an orphan (swift-subprocess reaps its own
/// workers at once through their pidfd).
///
/// Nothing runs while no worker exits: orphans appear only when a worker dies (its children
/// are re-parented to us then), so each worker's exit (``workerExited()``) starts scans, one
/// a second, which stop once no child but workers is left. The scan every second it replaces
/// read every child's `/proc/PID/stat` and was 18 % of an idle supervisor's CPU at 100
/// networks (perf, docs/benchmarks.md). Issue 11 (switches and plugs that outlive their
/// worker for good) needs an exit watch per adopted process (pidfd) instead.
actor OrphanReaper: Service, CustomStringConvertible {
    let logger: Logger
    let interval: Duration
    private var scans: Task<Void, Never>?

    init(logger: Logger, interval: Duration = .seconds(1)) {
        self.logger = logger
        self.interval = interval
    }

    nonisolated var description: String { "OrphanReaper" }

    /// Makes this process a child subreaper. Call before starting any worker.
    static func becomeSubreaper() -> Bool {
        clinux_set_child_subreaper() == 0
    }

    func run() async throws {
        try? await gracefulShutdown()
        scans?.cancel()
    }

    /// A worker process exited: what it left is ours now. Starts the scans unless they run.
    nonisolated func workerExited() {
        Task { await self.startScans() }
    }

    private func startScans() {
        guard scans == nil else { return }
        scans = Task { await self.scanWhileOrphansRemain() }
    }

    private func scanWhileOrphansRemain() async {
        var seenZombies: Set<Int32> = []
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { break }
            let children = Self.children(of: getpid())
            let zombies = Set(children.filter { $0.state == "Z" }.map(\.pid))
            for pid in zombies.intersection(seenZombies) {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    logger.info("reaped an orphaned child", metadata: ["pid": "\(pid)", "status": "\(status)"])
                }
            }
            seenZombies = zombies
            // No suspension from here to `scans = nil`: a worker exit meanwhile starts new scans.
            if zombies.isEmpty, children.allSatisfy({ $0.program == Self.workerProgram }) { break }
        }
        scans = nil
    }

    /// The program name (`comm`) of a worker process.
    static let workerProgram = "vde-networker"

    /// The children of this process: the pids listed in `/proc/self/task/*/children` (a few
    /// small files, not a walk over every process), with state and program from their stat.
    static func children(of parent: Int32) -> [(pid: Int32, state: Character, program: String)] {
        guard let directory = opendir("/proc/\(parent)/task") else { return [] }
        defer { closedir(directory) }
        var result: [(pid: Int32, state: Character, program: String)] = []
        while let entry = readdir(directory) {
            let task = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard Int32(task) != nil, let text = readSmallFile("/proc/\(parent)/task/\(task)/children") else { continue }
            for word in text.split(separator: " ") {
                guard let pid = Int32(word.trimmingCharacters(in: "\n")), let stat = readStat(pid), stat.parent == parent else { continue }
                result.append((pid, stat.state, stat.program))
            }
        }
        return result
    }

    static func readSmallFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = fread(&buffer, 1, buffer.count - 1, file)
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// State, parent pid and program from `/proc/PID/stat` (the program name may contain
    /// spaces and parentheses: it is what lies between the first `(` and the last `)`).
    static func readStat(_ pid: Int32) -> (state: Character, parent: Int32, program: String)? {
        guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 1024)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")"), open < close else { return nil }
        let program = String(line[line.index(after: open)..<close])
        let fields = line[line.index(after: close)...].split(separator: " ")
        guard fields.count >= 2, let state = fields[0].first, let parent = Int32(fields[1]) else { return nil }
        return (state, parent, program)
    }
}
