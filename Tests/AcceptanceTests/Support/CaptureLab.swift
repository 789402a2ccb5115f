import Foundation
import Glibc
import Shared
import Subprocess
import Synchronization
import SystemPackage

/// The real `vde-supervisor capture` command (issue 14) against a test's supervisor: its
/// private control socket, and dockerd (its default socket) to resolve network and container
/// names. Options go first: everything after NETWORK is CONTAINER and FILTER words.
enum CaptureCLI {
    static let tcpdump = "/usr/bin/tcpdump"

    /// `vde-supervisor capture --control-socket S OPTIONS... NETWORK [WORDS...]`.
    static func argv(_ supervisor: Supervisor, options: [String] = [], _ words: [String]) throws -> [String] {
        [try Binaries.supervisor, "capture", "--control-socket", supervisor.statusControlSocket] + options + words
    }

    /// Runs a capture that ends by itself (`-c`, `--duration`, a refusal); the result, whatever it was.
    static func run(
        _ supervisor: Supervisor, options: [String] = [], _ words: [String], timeout: Duration = .seconds(60)
    ) async throws -> CommandResult {
        try await Command.run(try argv(supervisor, options: options, words), timeout: timeout)
    }

    /// Fails with what to do unless the capture plugin sits beside the binaries (where the
    /// worker looks first) and tcpdump, which reads what the tests capture, is installed.
    static func checkRequirements() throws {
        let plugin = try Binaries.directory() + "/vde-capture.so"
        guard TempDir.exists(plugin) else {
            throw AcceptanceFailure(
                "\(plugin) is missing: build it with `bash -c '. scripts/lib.sh; build_capture_plugin $(swift build --show-bin-path)'` (scripts/test does)"
            )
        }
        guard FileManager.default.isExecutableFile(atPath: tcpdump) else {
            throw AcceptanceFailure("\(tcpdump) is missing: \(runScriptsTestHint)")
        }
    }
}

/// The line a capture prints on stderr when it ends: `N frames captured (M seen), D dropped`.
struct CaptureSummary: Sendable, CustomStringConvertible {
    var captured: Int
    var seen: Int
    var dropped: Int

    /// The last summary line in `text` (a capture's stderr), or nil when it printed none.
    init?(_ text: String) {
        guard let line = text.split(separator: "\n").last(where: { $0.contains(" frames captured (") }) else {
            return nil
        }
        func number(before marker: String) -> Int? {
            guard let range = line.range(of: marker) else { return nil }
            let digits = line[..<range.lowerBound].reversed().prefix { $0.isNumber }
            return Int(String(digits.reversed()))
        }
        guard let captured = number(before: " frames captured"), let seen = number(before: " seen)"),
            let dropped = number(before: " dropped")
        else { return nil }
        (self.captured, self.seen, self.dropped) = (captured, seen, dropped)
    }

    var description: String { "\(captured) frames captured (\(seen) seen), \(dropped) dropped" }
}

/// A `vde-supervisor capture` the test keeps running while traffic flows. Its stdout goes to a
/// file descriptor the test chose (a pipe, or /dev/null with `-w FILE`), its stderr to a log.
struct RunningCapture: Sendable {
    let process: BackgroundProcess
    var pid: pid_t { process.pid }
    /// Its stderr so far.
    var stderr: String { process.logTail(16_000) }
    var isRunning: Bool { process.isRunning }

    /// Waits for it to exit by itself (after `-c`, a closed pipe, a signal the test sent).
    func waitForExit(_ why: String, deadline: Duration = .seconds(30)) async throws {
        try await Poll.until(
            "the capture (pid \(pid)) to exit after \(why)", deadline: deadline, every: .milliseconds(50)
        ) {
            !process.isRunning
        }
    }

    /// SIGINT, as Ctrl-C sends, and waits for it to end.
    func interrupt() async throws {
        process.signal(SIGINT)
        try await waitForExit("SIGINT")
    }
}

/// How one running capture ended: the body's outcome, its exit status, its stderr, and the
/// signals needed to stop it if the body left it running.
struct CaptureEnd<T: Sendable>: Sendable {
    var outcome: Result<T, any Error>
    var status: TerminationStatus
    var stderr: String
    var stopSteps: [String]
    var summary: CaptureSummary? { CaptureSummary(stderr) }
    var exitedZero: Bool { if case .exited(0) = status { true } else { false } }
}

enum CaptureRun {
    /// Starts `argv` with stdout to `stdout` (closed here once the child has it; /dev/null when
    /// nil) and stderr to `log`, runs `body`, then stops it (SIGINT, then SIGKILL) unless it
    /// already exited.
    static func with<T: Sendable>(
        _ argv: [String], stdout: FileDescriptor? = nil, log: String,
        _ body: (RunningCapture) async throws -> T
    ) async throws -> CaptureEnd<T> {
        var options = PlatformOptions()
        options.processGroupID = 0
        let logFD = try FileDescriptor.open(
            FilePath(log), .writeOnly, options: [.create, .truncate, .closeOnExec],
            permissions: [.ownerReadWrite, .groupRead, .otherRead])
        let out = try stdout ?? FileDescriptor.open(FilePath("/dev/null"), .writeOnly, options: [.closeOnExec])
        let result = try await Subprocess.run(
            .path(FilePath(argv[0])), arguments: Arguments(Array(argv.dropFirst())),
            platformOptions: options,
            input: .inputWriter,
            output: .fileDescriptor(out, closeAfterSpawningProcess: true),
            error: .fileDescriptor(logFD, closeAfterSpawningProcess: true)
        ) { execution -> (Result<T, any Error>, [String]) in
            let process = BackgroundProcess(
                argv: argv, pid: execution.processIdentifier.value, logPath: log,
                stdin: execution.standardInputWriter)
            let outcome: Result<T, any Error>
            do { outcome = .success(try await body(RunningCapture(process: process))) } catch {
                outcome = .failure(error)
            }
            var steps: [String] = []
            if process.isRunning {
                steps.append("SIGINT")
                process.signal(SIGINT)
                if (try? await RunningCapture(process: process).waitForExit("the test ended")) == nil {
                    steps.append("SIGKILL")
                    kill(-process.pid, SIGKILL)
                }
            }
            return (outcome, steps)
        }
        let (outcome, steps) = result.closureResult
        return CaptureEnd(
            outcome: outcome, status: result.terminationStatus, stderr: TempDir.readText(log) ?? "", stopSteps: steps)
    }
}

/// A pipe whose two ends are close-on-exec, so that only the child a test hands an end to holds
/// it (a ping started meanwhile must not keep a reader's end open). The write end goes to a
/// child (which closes it here once spawned); the read end stays with the test, or goes to a
/// reader child through ``takeRead()``, and is closed at the latest when the pipe goes away.
final class TestPipe: Sendable {
    let write: FileDescriptor
    private let read: Mutex<FileDescriptor?>

    init() throws {
        var fds: [Int32] = [-1, -1]
        // Glibc does not export pipe2 to Swift: pipe, then FD_CLOEXEC on both ends. Nothing of
        // the test spawns between the two calls (its steps run one after the other).
        guard pipe(&fds) == 0 else { throw AcceptanceFailure("pipe failed: errno \(errno)") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        read = Mutex(FileDescriptor(rawValue: fds[0]))
        write = FileDescriptor(rawValue: fds[1])
    }

    /// Hands the read end over (to a child that closes it); nil when already taken or closed.
    func takeRead() -> FileDescriptor? {
        read.withLock { fd in
            defer { fd = nil }
            return fd
        }
    }

    /// Closes the read end unless it was taken or closed already: the writer then meets EPIPE.
    func closeRead() { try? takeRead()?.close() }

    deinit { closeRead() }
}

/// Frames of a pcap file as `tcpdump -r FILE -n -e -t` prints them, one a line:
/// `SRC_MAC > DST_MAC, ethertype IPv4 (0x0800), length 98: 10.0.0.1 > 10.0.0.2: ICMP echo request, ...`.
struct PcapFrames: Sendable, CustomStringConvertible {
    var lines: [String]
    /// tcpdump's stderr: `reading from file F, link-type EN10MB (Ethernet), snapshot length N`.
    var header: String

    /// Reads `path` with the real tcpdump; throws (with its output) unless it exits 0, which
    /// it does not for a file that is not pcap or is cut short.
    static func read(_ path: String) async throws -> PcapFrames {
        let result = try await Command.run([CaptureCLI.tcpdump, "-r", path, "-n", "-e", "-t"], timeout: .seconds(60))
        guard result.succeeded else { throw AcceptanceFailure("tcpdump -r \(path) failed: \(result)") }
        return PcapFrames(
            lines: result.stdout.split(separator: "\n").map(String.init), header: result.stderr.trimmingWhitespace)
    }

    static func source(_ line: String) -> String { String(line.split(separator: " ").first ?? "").lowercased() }
    static func destination(_ line: String) -> String {
        let fields = line.split(separator: " ")
        return fields.count > 2
            ? String(fields[2]).trimmingCharacters(in: CharacterSet(charactersIn: ",")).lowercased() : ""
    }

    /// A group address (broadcast, IPv4/IPv6 multicast): bit 0 of its first octet.
    static func isGroup(_ mac: String) -> Bool {
        guard let first = UInt8(mac.prefix(2), radix: 16) else { return false }
        return first & 1 == 1
    }

    func echoRequests(from: String, to: String) -> Int {
        lines.filter { $0.contains(": \(from) > \(to): ICMP echo request") }.count
    }

    func echoReplies(from: String, to: String) -> Int {
        lines.filter { $0.contains(": \(from) > \(to): ICMP echo reply") }.count
    }

    /// Frames neither sent by `mac` nor addressed to it (group addresses aside).
    func unicastNotOf(_ mac: String) -> [String] {
        let mac = mac.lowercased()
        return lines.filter { line in
            let (src, dst) = (Self.source(line), Self.destination(line))
            return src != mac && dst != mac && !Self.isGroup(dst)
        }
    }

    var arp: [String] { lines.filter { $0.contains("ethertype ARP") } }

    var description: String {
        "\(lines.count) frames (\(header)):\n    " + lines.prefix(40).joined(separator: "\n    ")
            + (lines.count > 40 ? "\n    ..." : "")
    }
}

/// What a network's capture machinery has left on the host: it must be nothing once every
/// capture has ended.
struct CaptureTraces: Sendable, Equatable, CustomStringConvertible {
    /// Captures `status --json` lists for the network.
    var statusCaptures: Int
    /// Unix sockets below the network's captures dir.
    var sockets: [String]
    /// Whether the switch's `plugin/list` names `vdecapture`.
    var pluginLoaded: Bool
    /// Ports the switch's `port/allprint` lists.
    var switchPorts: Int
    /// `vde-supervisor capture` processes of this test's supervisor still alive.
    var captureProcesses: [String]

    var description: String {
        "status captures \(statusCaptures), sockets \(sockets), vdecapture loaded \(pluginLoaded), "
            + "switch ports \(switchPorts), capture processes \(captureProcesses)"
    }
}

enum CaptureLab {
    /// A network's captures in `status --json` (checked against docs/status.md; each the raw
    /// JSON object).
    static func statusCaptures(_ supervisor: Supervisor, network: String) async throws
        -> [[String: StatusJSONValue]]
    {
        let run = try await StatusCLI.checkedJSON(socket: supervisor.statusControlSocket).run
        guard case .object(let report) = try run.json(), case .array(let networks)? = report["networks"] else {
            throw AcceptanceFailure("status --json has no networks: \(run)")
        }
        for case .object(let entry) in networks {
            guard case .string(let id)? = entry["id"], id == network else { continue }
            guard case .array(let captures)? = entry["captures"] else { return [] }
            return captures.compactMap { if case .object(let o) = $0 { o } else { nil } }
        }
        throw AcceptanceFailure("status --json does not list network \(network): \(run)")
    }

    /// Waits until status lists `count` captures of the network whose command connected (a
    /// client pid): from then on every frame reaches them.
    @discardableResult
    static func awaitConnected(_ supervisor: Supervisor, network: String, count: Int) async throws
        -> [[String: StatusJSONValue]]
    {
        try await Poll.value("\(count) connected capture(s) of \(network) in status", deadline: .seconds(20)) {
            let captures = try await statusCaptures(supervisor, network: network)
            let connected = captures.filter { if case .int? = $0["clientPID"] { true } else { false } }
            return connected.count == count ? captures : nil
        }
    }

    static func switchPorts(_ management: String) async throws -> Int {
        let text = try await managementCommand(management, "port/allprint")
        return text.split(separator: "\n").filter { $0.hasPrefix("Port ") }.count
    }

    static func traces(_ supervisor: Supervisor, network: String) async throws -> CaptureTraces {
        let paths = try supervisor.paths(network: network)
        guard let management = paths.managementSocket else {
            throw AcceptanceFailure("network \(network) has no management socket")
        }
        let plugins = try await managementCommand(management, "plugin/list")
        let control = supervisor.statusControlSocket
        let commands = HostInspector.processes().filter { p in
            p.program == "vde-supervisor" && p.argv.contains("capture") && p.argv.contains(control)
        }
        return CaptureTraces(
            statusCaptures: try await statusCaptures(supervisor, network: network).count,
            sockets: TempDir.sockets(under: paths.capturesDir),
            pluginLoaded: plugins.contains("vdecapture"),
            switchPorts: try await switchPorts(management),
            captureProcesses: commands.map(\.description))
    }

    /// Waits until the network's capture machinery is back to `baseline` (what it was before
    /// any capture: no capture, no socket, no plugin, the same ports, no command left);
    /// throws with what is left otherwise. The worker ends a capture after its command did,
    /// so this polls.
    static func expectNothingLeft(_ supervisor: Supervisor, network: String, baseline: CaptureTraces) async throws {
        var last = baseline
        do {
            try await Poll.until("the captures of \(network) to leave nothing behind", deadline: .seconds(15)) {
                last = try await traces(supervisor, network: network)
                return last == baseline
            }
        } catch {
            throw AcceptanceFailure(
                "captures left something behind: \(last), before any capture: \(baseline)\n--- supervisor log ---\n\(supervisor.logTail())"
            )
        }
    }

    /// The switch's argv (the plugin started it): `-x` there makes it a hub.
    static func switchArgv(_ supervisor: Supervisor, network: String) throws -> [String] {
        let ctl = try supervisor.switchDir(network: network)
        guard let sw = HostInspector.vdeProcesses(mentioning: [ctl]).first(where: { $0.program == "vde_switch" }) else {
            throw AcceptanceFailure("no vde_switch runs for \(ctl)")
        }
        return sw.argv
    }
}

/// A pseudo-terminal for a capture's stdout: the command sees a terminal (`isatty`) and prints
/// its summary lines; the test reads them from the primary side.
final class PseudoTerminal: @unchecked Sendable {
    let primary: Int32
    private var secondaryPath: String

    /// `TIOCGPTN` and `TIOCSPTLCK` (asm-generic/ioctls.h): macros Swift does not import, and
    /// posix_openpt/grantpt/unlockpt are not in Swift's Glibc module.
    private static let getPTYNumber: UInt = 0x8004_5430
    private static let setPTYLock: UInt = 0x4004_5431

    init() throws {
        primary = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        var number: CInt = 0
        var unlock: CInt = 0
        guard primary >= 0, ioctl(primary, Self.setPTYLock, &unlock) == 0,
            ioctl(primary, Self.getPTYNumber, &number) == 0
        else {
            throw AcceptanceFailure("cannot open a pseudo-terminal: \(String(cString: strerror(errno)))")
        }
        secondaryPath = "/dev/pts/\(number)"
        // Raw output: no "\r\n" for "\n".
        var settings = termios()
        let secondary = open(secondaryPath, O_RDWR | O_NOCTTY)
        if secondary >= 0 {
            tcgetattr(secondary, &settings)
            settings.c_oflag &= ~tcflag_t(OPOST)
            tcsetattr(secondary, TCSANOW, &settings)
            close(secondary)
        }
    }

    deinit { close(primary) }

    /// The terminal's other side, for a child's stdout (the child's copy is closed after spawning).
    func takeSecondary() throws -> FileDescriptor {
        let fd = open(secondaryPath, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else {
            throw AcceptanceFailure("cannot open \(secondaryPath): \(String(cString: strerror(errno)))")
        }
        return FileDescriptor(rawValue: fd)
    }

    /// Everything written to the terminal so far (call once the writer has exited).
    func readAll() -> String {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        _ = fcntl(primary, F_SETFL, fcntl(primary, F_GETFL) | O_NONBLOCK)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(primary, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A pcap file read byte by byte (the classic format, as the capture command writes it): the
/// snap length of its header and, per record, the bytes kept and the length on the wire.
struct PcapFile: CustomStringConvertible {
    var snapLength: UInt32
    var records: [(captured: UInt32, original: UInt32)]

    init(path: String) throws {
        let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        func u32(_ offset: Int) -> UInt32 {
            UInt32(data[offset]) | UInt32(data[offset + 1]) << 8 | UInt32(data[offset + 2]) << 16
                | UInt32(data[offset + 3]) << 24
        }
        guard data.count >= 24, [0xa1b2_c3d4, 0xa1b2_3c4d].contains(u32(0)) else {
            throw AcceptanceFailure("\(path) is no little-endian pcap file (\(data.count) bytes)")
        }
        snapLength = u32(16)
        records = []
        var offset = 24
        while offset + 16 <= data.count {
            let captured = u32(offset + 8)
            records.append((captured, u32(offset + 12)))
            offset += 16 + Int(captured)
        }
    }

    var description: String {
        "snap length \(snapLength), records " + records.map { "\($0.captured)/\($0.original)" }.joined(separator: " ")
    }
}
