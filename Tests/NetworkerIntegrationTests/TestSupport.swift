import Dispatch
import Shared
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Host helpers for the integration tests: spawning with posix_spawn (argv arrays only),
/// process liveness, and a tracker that removes whatever a test made.
enum Host {
    static var isRoot: Bool { getuid() == 0 }

    /// `ip`, wherever this system keeps it (PATH may lack /usr/sbin).
    static let ip: String = {
        let candidates: [String] = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        return candidates.first { access($0, X_OK) == 0 } ?? "ip"
    }()

    static var hasVDE: Bool {
        ["vde_switch", "vde_plug2tap"].allSatisfy { name in
            ["/usr/bin/", "/usr/local/bin/", "/usr/sbin/"].contains { access($0 + name, X_OK) == 0 }
        }
    }

    /// The vde-networker binary: `$VDE_NETWORKER`, or the one next to the running test executable
    /// (`.build-worker/debug/` holds both).
    static var networkerPath: String {
        if let override = getenv("VDE_NETWORKER") { return String(cString: override) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let exe = n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        var directory = exe
        while let slash = directory.lastIndex(of: "/") {
            directory = String(directory[..<slash])
            let candidate = directory + "/vde-networker"
            if access(candidate, X_OK) == 0 { return candidate }
            if directory.isEmpty || directory.hasSuffix("/debug") || directory.hasSuffix("/release") { break }
        }
        return directory + "/vde-networker"
    }

    /// Random hex for unique names.
    static func randomHex(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef")
        return String((0..<count).map { _ in digits[Int.random(in: 0..<digits.count, using: &generator)] })
    }

    /// Spawns `argv` with the given fds as stdin/stdout/stderr (-1: /dev/null), in a new process
    /// group, with default signal handling and the fds marked close-on-exec left behind.
    static func spawn(
        _ argv: [String], stdin: Int32 = -1, stdout: Int32 = -1, stderr: Int32 = 2,
        environment: [String]? = nil
    ) -> pid_t? {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (source, target) in [(stdin, Int32(0)), (stdout, Int32(1)), (stderr, Int32(2))] {
            if source >= 0 {
                posix_spawn_file_actions_adddup2(&actions, source, target)
            } else {
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGCHLD] { sigaddset(&defaults, signal) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for arg in cArgs { free(arg) } }
        var pid: pid_t = 0
        guard let environment else {
            return posix_spawnp(&pid, argv[0], &actions, &attributes, &cArgs, environ) == 0 ? pid : nil
        }
        var cEnv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { for entry in cEnv { free(entry) } }
        return posix_spawnp(&pid, argv[0], &actions, &attributes, &cArgs, &cEnv) == 0 ? pid : nil
    }

    /// A pipe whose both ends are close-on-exec (dup2 onto 0/1/2 in a child clears the flag there).
    static func pipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        precondition(Glibc.pipe(&fds) == 0)
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// Runs a command to its end and returns its exit status and combined output.
    @discardableResult
    static func run(_ argv: [String]) -> (status: Int32, output: String) {
        let (readEnd, writeEnd) = pipe()
        guard let pid = spawn(argv, stdout: writeEnd, stderr: writeEnd) else {
            close(readEnd)
            close(writeEnd)
            return (127, "cannot run \(argv[0])")
        }
        close(writeEnd)
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            output.append(contentsOf: buffer[0..<n])
        }
        close(readEnd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, String(decoding: output, as: UTF8.self))
    }

    /// True while `pid` exists and is not a zombie.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = FileRead.text("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].first
        return state != "Z" && state != "X"
    }

    /// Live processes whose command line contains `text` (e.g. a test's ctl dir).
    static func processes(commandLineContaining text: String) -> [pid_t] {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var found: [pid_t] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard let pid = pid_t(name), pid != getpid(),
                let bytes = FileRead.bytes("/proc/\(pid)/cmdline"), !bytes.isEmpty
            else { continue }
            let commandLine = String(decoding: bytes.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if commandLine.contains(text), isAlive(pid) { found.append(pid) }
        }
        return found
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Polls `condition` every 20 ms until it holds or `timeout` passes.
    static func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }

    /// `busybox ping` from inside a namespace, retried until it succeeds or `timeout` passes.
    static func ping(from namespace: String, to address: String, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        repeat {
            if run([Host.ip, "netns", "exec", namespace, "busybox", "ping", "-c", "3", "-W", "1", address]).status == 0
            {
                return true
            }
            try? await Task.sleep(for: .milliseconds(200))
        } while ContinuousClock.now < deadline
        return false
    }
}

enum FileRead {
    static func bytes(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            result.append(contentsOf: buffer[0..<n])
        }
        return result
    }

    static func text(_ path: String) -> String? {
        bytes(path).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// Everything a test creates on the host, removed by ``cleanUp()`` whatever happened.
final class Scratch: @unchecked Sendable {
    let id = Host.randomHex(6)
    let directory: String
    private var namespaces: [String] = []
    private var taps: [String] = []
    private var processes: [pid_t] = []

    init() {
        directory = "/tmp/vdenw-" + id
        mkdir(directory, 0o755)
    }

    /// A fresh network namespace `vdenw-<id>-<suffix>`; returns its name.
    func namespace(_ suffix: String) -> String {
        let name = "vdenw-\(id)-\(suffix)"
        let result = Host.run([Host.ip, "netns", "add", name])
        #expect(result.status == 0, "ip netns add \(name): \(result.output)")
        namespaces.append(name)
        return name
    }

    func trackTap(_ name: String) { taps.append(name) }
    func trackProcess(_ pid: pid_t) { processes.append(pid) }

    /// A tap name that no other test uses.
    func tapName(_ suffix: String) -> TapName {
        let name = TapName(stringLiteral: "vt\(id)\(suffix)")
        trackTap(name.rawValue)
        return name
    }

    func cleanUp() {
        // VDENW_KEEP_LOGS=DIR keeps the worker logs of every test there.
        if let keep = getenv("VDENW_KEEP_LOGS") {
            Host.run(["cp", directory + "/worker.log", String(cString: keep) + "/worker-" + id + ".log"])
        }
        for pid in processes where Host.isAlive(pid) { kill(pid, SIGKILL) }
        // Anything still running on this test's sockets.
        for pid in Host.processes(commandLineContaining: directory) { kill(pid, SIGKILL) }
        for name in namespaces { Host.run([Host.ip, "netns", "del", name]) }
        for name in taps where Host.exists("/sys/class/net/\(name)") { Host.run([Host.ip, "link", "del", name]) }
        Host.run(["rm", "-rf", "--", directory])
    }
}

/// A running vde-networker with pipes on stdin and stdout; collects every line it writes.
final class WorkerHarness: @unchecked Sendable {
    let pid: pid_t
    let networkID: NetworkID
    let logPath: String
    private var input: Int32
    private let messages = Mutex<[WorkerMessage]>([])
    private let badLines = Mutex<[String]>([])
    private var nextID: UInt64 = 1
    private var reaped: Int32?

    /// `environment`: the worker's whole environment (nil: this process's).
    init(
        networkID: NetworkID = NetworkID(stringLiteral: "net" + Host.randomHex(12)), runDir: String, logPath: String,
        environment: [String]? = nil
    ) throws {
        self.networkID = networkID
        self.logPath = logPath
        let stdinPipe = Host.pipe()
        let stdoutPipe = Host.pipe()
        let log = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(log) }
        guard
            let pid = Host.spawn(
                [Host.networkerPath, "--network-id", networkID.rawValue, "--log-level", "debug", "--run-dir", runDir],
                stdin: stdinPipe.read, stdout: stdoutPipe.write, stderr: log, environment: environment)
        else {
            throw HarnessError(
                "cannot start \(Host.networkerPath): build it first (swift build --scratch-path .build-worker --product vde-networker) or set VDE_NETWORKER"
            )
        }
        self.pid = pid
        close(stdinPipe.read)
        close(stdoutPipe.write)
        input = stdinPipe.write
        let output = stdoutPipe.read
        DispatchQueue(label: "harness-\(pid)").async { [self] in
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(output, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending.append(contentsOf: buffer[0..<n])
                while let newline = pending.firstIndex(of: 0x0a) {
                    let line = Array(pending[..<newline])
                    pending.removeSubrange(...newline)
                    if let message = try? JSONCoding.decode(WorkerMessage.self, from: line) {
                        self.messages.withLock { $0.append(message) }
                    } else {
                        self.badLines.withLock { $0.append(String(decoding: line, as: UTF8.self)) }
                    }
                }
            }
            close(output)
        }
    }

    /// Lines on stdout that were not protocol messages (there must be none).
    var nonProtocolLines: [String] { badLines.withLock { $0 } }
    var allMessages: [WorkerMessage] { messages.withLock { $0 } }

    func writeLine(_ text: String) {
        var bytes = Array((text + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(input, $0.baseAddress.map { $0 + offset }, $0.count - offset) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Sends a command and waits for its reply.
    func request(_ command: WorkerCommand, timeout: Duration = .seconds(15)) async throws -> HarnessReply {
        let id = nextID
        nextID += 1
        writeLine(try JSONCoding.string(WorkerRequest(id: id, command)))
        return try await reply(to: id, timeout: timeout)
    }

    func reply(to id: UInt64, timeout: Duration = .seconds(15)) async throws -> HarnessReply {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found = messages.withLock { all in all.lazy.compactMap { HarnessReply($0) }.first { $0.id == id } }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw HarnessError("no reply to request \(id) within \(timeout); worker log:\n\(logTail())")
    }

    /// Waits for an event of `kind` that matches `predicate` and arrived after `after` earlier messages.
    func event(
        _ kind: WorkerEvent.Kind, after: Int = 0, timeout: Duration = .seconds(10),
        where predicate: (WorkerEvent) -> Bool = { _ in true }
    ) async throws -> WorkerEvent {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found = messages.withLock { all in
                all.dropFirst(after).compactMap(\.event).first { $0.kind == kind && predicate($0) }
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw HarnessError(
            "no \(kind.rawValue) event within \(timeout); messages: \(allMessages.count); worker log:\n\(logTail())")
    }

    var messageCount: Int { messages.withLock { $0.count } }

    /// Waits for the `endpointState` event of each of `ids` (the first after `after` earlier
    /// messages) and returns them by endpoint ID.
    func endpointStates(_ ids: [EndpointID], after: Int = 0, timeout: Duration = .seconds(20)) async throws
        -> [EndpointID: WorkerEvent]
    {
        let deadline = ContinuousClock.now + timeout
        let wanted = Set(ids)
        while true {
            var found: [EndpointID: WorkerEvent] = [:]
            for event in messages.withLock({ Array($0.dropFirst(after)) }).compactMap(\.event)
            where event.kind == .endpointState {
                if let id = event.endpointID, wanted.contains(id), found[id] == nil { found[id] = event }
            }
            if found.count == wanted.count { return found }
            if ContinuousClock.now >= deadline {
                throw HarnessError(
                    "endpointState for \(found.count) of \(wanted.count) endpoints within \(timeout); worker log:\n\(logTail())"
                )
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func closeInput() {
        if input >= 0 {
            close(input)
            input = -1
        }
    }

    func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the worker to exit; returns its exit status (128+N for signal N), nil on timeout.
    func waitForExit(timeout: Duration = .seconds(10)) async -> Int32? {
        if let reaped { return reaped }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                reaped = code
                return code
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    /// Stops the worker if it still runs, and reaps it; for cleanup. The end of its input no
    /// longer stops a worker (it waits for the next supervisor, leaving its switch and plugs
    /// running), so it is sent `shutdown` (which stops everything), given 5 s, then killed.
    func stop() {
        guard reaped == nil else {
            closeInput()
            return
        }
        var status: Int32 = 0
        if input >= 0, waitpid(pid, &status, WNOHANG) == 0 {
            let id = nextID
            nextID += 1
            if let line = try? JSONCoding.string(WorkerRequest(id: id, .shutdown)) { writeLine(line) }
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline, waitpid(pid, &status, WNOHANG) == 0 { usleep(10_000) }
            if ContinuousClock.now < deadline {
                closeInput()
                reaped = 0
                return
            }
        }
        closeInput()
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        reaped = 137
    }

    func logTail(lines: Int = 40) -> String {
        let text = FileRead.text(logPath) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}

extension WorkerMessage {
    /// The event a message carries, if it is one.
    var event: WorkerEvent? {
        if case .event(let event) = self { return event }
        return nil
    }
}

/// A worker's answer to one request, flattened for assertions: `ok` and `error`, or what the
/// reply carries in `result`.
struct HarnessReply: Sendable {
    var id: UInt64
    var reply: WorkerReply?
    var error: VDEError?
    var ok: Bool { reply != nil }
    var result: ReplyFields? { reply.map(ReplyFields.init) }

    init?(_ message: WorkerMessage) {
        switch message {
        case .reply(let id, let reply): (self.id, self.reply, self.error) = (id, reply, nil)
        case .failure(let id, let error): (self.id, self.reply, self.error) = (id, nil, error)
        case .event: return nil
        }
    }
}

/// The fields of any ``WorkerReply``: each is set when the reply carries it.
struct ReplyFields: Sendable {
    var `switch`: SwitchStatus?
    var endpoint: EndpointStatus?
    var endpoints: [EndpointStatus]?
    var otherPorts: [PortCounters]?
    var captures: [CaptureStatus]?
    var captureSocket: String?

    init(_ reply: WorkerReply) {
        switch reply {
        case .started(let status, let endpoints): (self.switch, self.endpoints) = (status, endpoints)
        case .endpoint(let status): endpoint = status
        case .status(let status):
            (self.switch, endpoints, otherPorts) = (status.switch, status.endpoints, status.otherPorts)
            captures = status.captures
        case .stopped(let status): self.switch = status
        case .captureStarted(let socket): captureSocket = socket
        case .removed, .pong: break
        }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension SwitchSpec {
    /// A spec with its paths, both checked as the supervisor's would be (tests spell the paths out).
    init(
        networkDir: String, ctlDir: String, managementSocket: String?, mode: SwitchMode, group: GroupName?,
        numPorts: Int
    ) throws {
        try self.init(
            paths: NetworkPaths(networkDir: networkDir, ctlDir: ctlDir, managementSocket: managementSocket),
            mode: mode, group: group, numPorts: numPorts)
    }
}
