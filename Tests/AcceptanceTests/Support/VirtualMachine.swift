import Foundation
import Glibc
import Synchronization

/// The test VM's kernel and initramfs, as scripts/build-vm-image builds and caches them
/// (outside the repository; a clear failure when a piece cannot be fetched).
struct VMImage: Sendable {
    static let qemu = "/usr/bin/qemu-system-x86_64"
    let kernel: String
    let initrd: String

    /// The repository this test was built from (the script lives there).
    static var repositoryRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }  // Support, AcceptanceTests, Tests, file
        return url.path
    }

    private static let prepared = Mutex<VMImage?>(nil)

    /// Runs scripts/build-vm-image once per test run (it only checks its cache when that is
    /// current: about 3 s here; a first build fetches the kernel package, about 10 s).
    static func prepare() async throws -> VMImage {
        if let image = prepared.withLock({ $0 }) { return image }
        guard FileManager.default.isExecutableFile(atPath: qemu) else {
            throw AcceptanceFailure("\(qemu) is missing (Debian package qemu-system-x86): run scripts/install-deps")
        }
        let script = repositoryRoot + "/scripts/build-vm-image"
        guard FileManager.default.isExecutableFile(atPath: script) else {
            throw AcceptanceFailure("\(script) is missing: the VM tests need the repository they were built from")
        }
        let result = try await Command.run([script], timeout: .seconds(900))
        guard result.succeeded, let dir = result.stdout.split(separator: "\n").last.map(String.init) else {
            throw AcceptanceFailure(
                "scripts/build-vm-image could not build the test VM's kernel and initramfs: \(result)")
        }
        let image = VMImage(kernel: dir + "/vmlinuz", initrd: dir + "/initramfs.cpio.gz")
        for piece in [image.kernel, image.initrd] where !TempDir.exists(piece) {
            throw AcceptanceFailure("scripts/build-vm-image said it built \(dir), but \(piece) is missing: \(result)")
        }
        prepared.withLock { $0 = image }
        return image
    }
}

/// A user and groups to run QEMU as (`setpriv`), instead of root.
struct VMUser: Sendable, CustomStringConvertible {
    static let setpriv = "/usr/bin/setpriv"
    var uid: UInt32
    var gid: UInt32
    /// Supplementary groups; empty = none.
    var groups: [UInt32] = []

    var description: String { "uid \(uid) gid \(gid) groups \(groups)" }

    /// The argv prefix that drops to this user, with no capabilities and no new privileges.
    var argvPrefix: [String] {
        [
            Self.setpriv, "--reuid=\(uid)", "--regid=\(gid)",
            groups.isEmpty ? "--clear-groups" : "--groups=" + groups.map(String.init).joined(separator: ","),
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]
    }
}

/// What a command run in the VM printed (stdout and stderr together) and its exit status.
struct VMCommandResult: Sendable, CustomStringConvertible {
    var command: String
    var status: Int
    var output: String
    var succeeded: Bool { status == 0 }
    var description: String { "`\(command)` in the VM: status \(status)\n  output: \(output.prefix(4000))" }
}

/// A QEMU VM (TCG, the cached kernel and initramfs, `-netdev vde` only: no user-mode or host
/// network) whose serial console is QEMU's stdin and stdout: the console goes to a log file,
/// commands go in through the stdin pipe. The VM's init (scripts/build-vm-image) prints
/// `vm: ready` when it reads commands, `vm: lease IP/LEN ...` when DHCP gave it an address,
/// and answers each input line `ID COMMAND` with `vm: begin ID`, the output, `vm: end ID STATUS`.
struct VirtualMachine: Sendable {
    struct Options: Sendable {
        /// The switch's ctl dir (`socket_dir`), as `-netdev vde,sock=`.
        var socketDir: String
        var mac: String = VirtualMachine.randomMAC()
        /// nil: QEMU runs as root.
        var user: VMUser? = nil
        var memoryMiB = 256
    }

    static let readyMarker = "vm: ready"
    static let leaseMarker = "vm: lease "

    let argv: [String]
    let options: Options
    let process: BackgroundProcess
    let logPath: String
    private let nextID = Locked(0)

    /// QEMU's argv: the recipe the README shows, plus the test's console and MAC.
    static func argv(image: VMImage, options: Options) -> [String] {
        (options.user?.argvPrefix ?? [])
            + [
                VMImage.qemu, "-nodefaults", "-no-user-config", "-accel", "tcg", "-m", "\(options.memoryMiB)",
                "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
                "-kernel", image.kernel, "-initrd", image.initrd,
                "-append", "console=ttyS0 loglevel=1 panic=-1",
                "-netdev", "vde,id=n0,sock=\(options.socketDir)",
                "-device", "virtio-net-pci,netdev=n0,mac=\(options.mac)",
            ]
    }

    /// A locally administered unicast MAC in QEMU's 52:54:00 range.
    static func randomMAC() -> String {
        "52:54:00:" + (0..<3).map { _ in String(format: "%02x", Int.random(in: 0...255)) }.joined(separator: ":")
    }

    /// Boots a VM, waits for `vm: ready`, runs `body`, and stops QEMU (SIGTERM, then SIGKILL),
    /// also when `body` or the boot failed. The console log stays at `logPath`.
    static func with<T: Sendable>(
        image: VMImage, options: Options, logPath: String, bootDeadline: Duration = .seconds(120),
        _ body: (VirtualMachine) async throws -> T
    ) async throws -> T {
        let argv = argv(image: image, options: options)
        let started = ContinuousClock.now
        let run = try await Background.with(argv, logPath: logPath, stop: .terminate, graceDeadline: .seconds(10)) {
            process in
            let vm = VirtualMachine(argv: argv, options: options, process: process, logPath: logPath)
            do {
                _ = try await vm.waitForLine(containing: readyMarker, deadline: bootDeadline)
                print(
                    "note: the VM (QEMU pid \(process.pid)) was ready \(ContinuousClock.now - started) after QEMU started"
                )
                return try await body(vm)
            } catch {
                print("---- VM console (\(logPath)) after failure: \(error) ----\n\(vm.consoleTail())\n---- end ----")
                throw error
            }
        }
        return try run.outcome.get()
    }

    /// How an attempt to start a VM that should not get onto the switch ended.
    enum Attempt: Sendable {
        /// QEMU exited by itself, with this status and console/error output.
        case exited(status: String, output: String)
        /// The VM booted (its network device came up): it was not refused.
        case booted(output: String)
    }

    /// Starts QEMU and waits until it exits by itself or its VM reaches `vm: eth0`; QEMU is
    /// stopped either way.
    static func attempt(image: VMImage, options: Options, logPath: String, deadline: Duration = .seconds(120))
        async throws -> Attempt
    {
        let argv = argv(image: image, options: options)
        let run = try await Background.with(argv, logPath: logPath, stop: .terminate) { process -> Bool in
            let vm = VirtualMachine(argv: argv, options: options, process: process, logPath: logPath)
            try await Poll.until("QEMU to exit or its VM to boot", deadline: deadline, every: .milliseconds(100)) {
                !process.isRunning || vm.console.contains("vm: eth0")
            }
            return process.isRunning
        }
        let output = TempDir.readText(logPath) ?? ""
        if try run.outcome.get() { return .booted(output: output) }
        return .exited(status: "\(run.status)", output: output)
    }

    /// The console so far, without the carriage returns of the tty.
    var console: String { (TempDir.readText(logPath) ?? "").replacingOccurrences(of: "\r", with: "") }

    func consoleTail(_ maxBytes: Int = 6000) -> String { String(console.suffix(maxBytes)) }

    /// The console's complete lines so far (a line still being written is not one yet: a lease
    /// line read halfway gave the address "10.77.", measured).
    var consoleLines: [Substring] {
        let text = console
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        lines.removeLast()  // after the last newline: empty, or a line not finished yet
        return lines
    }

    /// Waits for a complete console line containing `marker` and returns the first such line.
    func waitForLine(containing marker: String, deadline: Duration = .seconds(60)) async throws -> String {
        try await Poll.value("the VM's console to say '\(marker)'", deadline: deadline, every: .milliseconds(50)) {
            if let line = consoleLines.first(where: { $0.contains(marker) }) {
                return String(line)
            }
            guard process.isRunning else {
                throw AcceptanceFailure("QEMU exited before its VM said '\(marker)':\n\(consoleTail(3000))")
            }
            return nil
        }
    }

    /// The address DHCP gave the VM (waits for the init's lease line).
    func leasedAddress(deadline: Duration = .seconds(60)) async throws -> String {
        let line = try await waitForLine(containing: Self.leaseMarker, deadline: deadline)
        guard let range = line.range(of: Self.leaseMarker),
            let address = line[range.upperBound...].split(separator: "/").first, !address.isEmpty
        else { throw AcceptanceFailure("cannot read the address in the VM's lease line: \(line)") }
        return String(address)
    }

    /// Runs one shell command (one line) in the VM and returns its output and status.
    func run(_ command: String, deadline: Duration = .seconds(60)) async throws -> VMCommandResult {
        precondition(!command.contains("\n"), "one line per command")
        let id = nextID.withLock { value -> Int in
            value += 1
            return value
        }
        let begin = "vm: begin \(id)\n"
        let end = "vm: end \(id) "
        _ = try await process.stdin.write("\(id) \(command)\n")
        return try await Poll.value(
            "the VM to finish `\(command)`", deadline: deadline, every: .milliseconds(50)
        ) { () -> VMCommandResult? in
            let text = console
            if let start = text.range(of: begin),
                let stop = text.range(of: end, range: start.upperBound..<text.endIndex)
            {
                let statusText = text[stop.upperBound...].prefix { $0.isNumber }
                // Not before its newline: "vm: end 7 1" may still become "vm: end 7 127".
                guard text[statusText.endIndex...].hasPrefix("\n"), let status = Int(statusText) else { return nil }
                return VMCommandResult(
                    command: command, status: status, output: String(text[start.upperBound..<stop.lowerBound]))
            }
            guard process.isRunning else {
                throw AcceptanceFailure("QEMU exited while its VM ran `\(command)`:\n\(consoleTail(3000))")
            }
            return nil
        }
    }

    /// Like ``run(_:deadline:)`` and requires status 0.
    @discardableResult
    func check(_ command: String, deadline: Duration = .seconds(60)) async throws -> VMCommandResult {
        let result = try await run(command, deadline: deadline)
        guard result.succeeded else { throw AcceptanceFailure("command failed: \(result)") }
        return result
    }
}

/// A fresh directory under /run (`/run/vdeacc-<tag>-XXXXXX`, mode 0755, so an unprivileged
/// QEMU can reach a `socket_dir` below it), removed afterwards.
enum RunTempDir {
    static func with<T>(_ tag: String, _ body: (String) async throws -> T) async throws -> T {
        var template = Array("/run/vdeacc-\(tag)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.flatMap { mkdtemp($0) } }
        guard made != nil else { throw AcceptanceFailure("mkdtemp under /run failed for \(tag): errno \(errno)") }
        let dir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(dir, 0o755)
        defer { TempDir.remove(dir) }
        return try await body(dir)
    }
}

/// A system group made for one test (`groupadd`), deleted afterwards (`groupdel`).
struct TestGroup: Sendable {
    let name: String
    let gid: UInt32

    static func with<T>(_ body: (TestGroup) async throws -> T) async throws -> T {
        let name = "vdeacc-" + IDs.tag(8)
        try await Command.check(["/usr/sbin/groupadd", "--system", name], timeout: .seconds(30))
        do {
            guard let entry = getgrnam(name) else {
                throw AcceptanceFailure("groupadd made \(name), getgrnam does not see it")
            }
            let group = TestGroup(name: name, gid: entry.pointee.gr_gid)
            let value = try await body(group)
            try await Command.check(["/usr/sbin/groupdel", name], timeout: .seconds(30))
            return value
        } catch {
            _ = try? await Command.run(["/usr/sbin/groupdel", name], timeout: .seconds(30))
            throw error
        }
    }
}
