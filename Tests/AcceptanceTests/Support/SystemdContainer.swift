import Foundation
import Glibc

/// The repository checkout these tests were compiled from.
enum Repository {
    static let root: String = {
        // <root>/Tests/AcceptanceTests/Support/<this file>
        var path = #filePath
        for _ in 0..<4 { path = (path as NSString).deletingLastPathComponent }
        return path
    }()

    static func file(_ relative: String) -> String { root + "/" + relative }
}

/// Tools the systemd tests need on the host; a missing one fails the test and names scripts/test.
enum SystemdTools {
    static let socketActivate = "/usr/bin/systemd-socket-activate"
    static let analyze = "/usr/bin/systemd-analyze"

    static func require(_ tools: [String]) throws {
        for tool in tools where !FileManager.default.isExecutableFile(atPath: tool) {
            throw AcceptanceFailure("\(tool) is missing (Debian package systemd): \(runScriptsTestHint)")
        }
    }
}

/// Release binaries built with `--static-swift-stdlib`: they run on a Debian without Swift,
/// needing only libc, libstdc++ and the system libraries (libsystemd, libvdeplug).
enum StaticBinaries {
    static let names = ["vde-supervisor", "vde-networker"]

    /// The product's one release build, `build_release` of scripts/lib.sh (scripts/test runs it
    /// and passes its directory as `VDE_STATIC_BIN_DIR`; without that the tests run the same
    /// build, which is then an up-to-date check).
    static var buildCommand: [String] {
        let swift =
            FileManager.default.isExecutableFile(atPath: "/opt/swift/usr/bin/swift")
            ? "/opt/swift/usr/bin/swift" : "swift"
        var command = [swift, "build", "--package-path", Repository.root, "-c", "release", "--static-swift-stdlib"]
        if let scratch = ProcessInfo.processInfo.environment["VDE_SCRATCH_PATH"], !scratch.isEmpty {
            command += ["--scratch-path", scratch]
        }
        return command
    }

    /// The directory holding both binaries: `VDE_STATIC_BIN_DIR`, or a (re)build of them.
    static func directory() async throws -> String {
        let dir: String
        if let given = ProcessInfo.processInfo.environment["VDE_STATIC_BIN_DIR"], !given.isEmpty {
            dir = given
        } else {
            let build = try await Command.run(buildCommand, timeout: .seconds(1800))
            guard build.succeeded else {
                throw AcceptanceFailure("building the static release binaries failed: \(build)")
            }
            let shown = try await Command.check(buildCommand + ["--show-bin-path"], timeout: .seconds(120))
            dir = shown.stdout.trimmingWhitespace
        }
        for name in names where !FileManager.default.isExecutableFile(atPath: dir + "/" + name) {
            throw AcceptanceFailure(
                "\(name) is missing in \(dir) (static release build): \(runScriptsTestHint), or run `\(buildCommand.joined(separator: " "))`"
            )
        }
        return dir
    }

    /// Fails when a binary links the Swift runtime dynamically or misses a library on this host.
    static func checkLinkage(_ path: String) async throws {
        let ldd = try await Command.check(["/usr/bin/ldd", path], timeout: .seconds(30))
        let libraries = ldd.stdout.split(whereSeparator: \.isNewline).map { String($0).trimmingWhitespace }
        let swiftRuntime = libraries.filter {
            $0.hasPrefix("libswift") || $0.hasPrefix("libFoundation") || $0.hasPrefix("libdispatch")
                || $0.hasPrefix("libBlocksRuntime") || $0.hasPrefix("lib_Foundation")
        }
        guard swiftRuntime.isEmpty else {
            throw AcceptanceFailure(
                "\(path) links the Swift runtime dynamically (not built with --static-swift-stdlib): \(swiftRuntime)")
        }
        let missing = libraries.filter { $0.contains("not found") }
        guard missing.isEmpty else { throw AcceptanceFailure("\(path) misses libraries: \(missing)") }
        // What the binary may need: glibc, the C++ runtime and the system libraries it names.
        let allowed = [
            "linux-vdso", "ld-linux", "libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "libutil.so",
            "libstdc++.so", "libgcc_s.so", "libsystemd.so", "libvdeplug.so",
            // libsystemd's own dependencies (all in the libsystemd0 package's Depends).
            "libcap.so", "libgcrypt.so", "libgpg-error.so", "liblzma.so", "libzstd.so", "liblz4.so",
        ]
        let unexpected = libraries.filter { line in
            let name = line.split(separator: " ").first.map(String.init) ?? line
            return !allowed.contains { name.hasPrefix($0) || name.hasSuffix("/" + $0) || name.contains("/" + $0) }
        }
        guard unexpected.isEmpty else {
            throw AcceptanceFailure(
                "\(path) needs libraries beyond libc/libstdc++/libsystemd/libvdeplug: \(unexpected)")
        }
    }
}

/// A container of `vde-test-systemd:latest` booted with a real systemd as PID 1, with the
/// docker run options that work on this host (docs: vde-and-host-notes.md; `--privileged`
/// fails here because dockerd itself lacks CAP_SYS_RESOURCE).
struct SystemdContainer: Sendable {
    static let image = "vde-test-systemd:latest"
    static let runOptions = [
        "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined",
        "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/net/tun",
        "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "-e", "container=docker",
    ]

    let name: String

    /// `docker exec NAME argv...`, whatever its exit status.
    func exec(_ argv: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
        try await Docker.run(["exec", name] + argv, timeout: timeout)
    }

    /// `docker exec NAME argv...`; throws unless it exits 0.
    @discardableResult
    func check(_ argv: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
        let result = try await exec(argv, timeout: timeout)
        guard result.succeeded else { throw AcceptanceFailure("in container \(name): \(result)") }
        return result
    }

    /// `systemctl show -p PROPERTY --value UNIT`, trimmed.
    func property(_ property: String, of unit: String) async throws -> String {
        try await check(["systemctl", "show", "-p", property, "--value", unit]).stdout.trimmingWhitespace
    }

    /// The unit's journal and state, for failure reports.
    func diagnostics() async -> String {
        var text = ""
        for argv in [
            ["systemctl", "is-system-running"], ["systemctl", "--failed", "--no-pager"],
            ["systemctl", "status", "--no-pager", "-l", "vde-supervisor.socket", "vde-supervisor.service"],
            ["journalctl", "--no-pager", "-n", "80", "-u", "vde-supervisor.service", "-u", "vde-supervisor.socket"],
        ] {
            if let r = try? await exec(argv, timeout: .seconds(30)) { text += "\n\(r)" }
        }
        return text
    }

    /// Fails with what to do unless dockerd answers and the image exists.
    static func checkEnvironment() async throws {
        try HostRequirements.check()
        guard FileManager.default.isExecutableFile(atPath: Docker.cli) else {
            throw AcceptanceFailure("\(Docker.cli) is missing: \(runScriptsTestHint)")
        }
        let info = try await Command.run([Docker.cli, "info", "--format", "{{.ServerVersion}}"], timeout: .seconds(30))
        guard info.succeeded else {
            throw AcceptanceFailure("dockerd does not answer (`docker info` failed): \(runScriptsTestHint)\n\(info)")
        }
        let image = try await Docker.run(
            ["image", "inspect", "--format", "{{.Id}}", Self.image], timeout: .seconds(30))
        guard image.succeeded else {
            throw AcceptanceFailure(
                "image \(Self.image) is missing: run scripts/build-systemd-image (\(runScriptsTestHint))\n\(image)")
        }
    }

    /// Boots a container, waits until its systemd is up (`running` or `degraded`), runs
    /// `body`, and removes the container afterwards, also when `body` failed.
    static func with<T: Sendable>(_ body: (SystemdContainer) async throws -> T) async throws -> T {
        try await checkEnvironment()
        let container = SystemdContainer(name: "vdeacc-systemd-\(IDs.tag(6))")
        let outcome: Result<T, any Error>
        do {
            try await Docker.check(
                ["run", "-d", "--name", container.name, "--label", Docker.label]
                    + runOptions + [image, "/sbin/init"])
            try await container.waitForBoot()
            outcome = .success(try await body(container))
        } catch {
            outcome = .failure(error)
            print(
                "---- systemd container \(container.name) after failure: \(error) ----\(await container.diagnostics())\n---- end ----"
            )
        }
        let removal = await container.remove()
        if case .success = outcome, let removal { throw AcceptanceFailure(removal) }
        if let removal { print(removal) }
        return try outcome.get()
    }

    /// Polls `systemctl is-system-running` until the boot finished.
    func waitForBoot() async throws {
        var last = ""
        do {
            try await Poll.until(
                "systemd in \(name) to finish booting (is-system-running: running or degraded)",
                deadline: .seconds(90), every: .milliseconds(250)
            ) {
                let running = try await Docker.run(
                    ["inspect", "--format", "{{.State.Running}}", name], timeout: .seconds(30))
                guard running.stdout.trimmingWhitespace == "true" else {
                    let logs = try? await Docker.run(["logs", "--tail", "40", name], timeout: .seconds(30))
                    throw AcceptanceFailure(
                        "container \(name) stopped while systemd booted (PID 1 exited): \(running)\n\(logs.map(String.init(describing:)) ?? "")"
                    )
                }
                let state = try await exec(["systemctl", "is-system-running"], timeout: .seconds(30))
                last = state.stdout.trimmingWhitespace
                return last == "running" || last == "degraded"
            }
        } catch {
            throw AcceptanceFailure("\(error) (last state: '\(last)')")
        }
    }

    /// Stops the service and every network it left running (`stop-networks`), then halts
    /// systemd the way a container manager does (SIGRTMIN+3), so that it stops its units
    /// and removes its cgroups (shared with the host through --cgroupns=host), then removes
    /// the container. Returns a failure text, or nil.
    func remove() async -> String? {
        // KillMode=process: stopping the unit leaves its networks running; stop-networks stops
        // them (as scripts/uninstall does), so that the halt finds nothing of ours left.
        // scripts/install's place or the package's.
        for supervisor in ["/usr/local/bin/vde-supervisor", "/usr/bin/vde-supervisor"]
        where (try? await exec(["test", "-x", supervisor], timeout: .seconds(30)))?.succeeded == true {
            _ = try? await exec(
                ["systemctl", "stop", "vde-supervisor.service", "vde-supervisor.socket"], timeout: .seconds(60))
            if let stopped = try? await exec([supervisor, "stop-networks"], timeout: .seconds(60)),
                !stopped.succeeded
            {
                print("note: \(supervisor) stop-networks in \(name) failed: \(stopped)")
            }
        }
        let sigrtmin3 = "SIGRTMIN+3"
        if (try? await Docker.run(["kill", "--signal", sigrtmin3, name], timeout: .seconds(30)))?.succeeded == true {
            _ = try? await Poll.until(
                "container \(name) to halt after \(sigrtmin3)", deadline: .seconds(30), every: .milliseconds(200)
            ) {
                let r = try await Docker.run(
                    ["inspect", "--format", "{{.State.Running}}", name], timeout: .seconds(30))
                return !r.succeeded || r.stdout.trimmingWhitespace == "false"
            }
        }
        guard let removed = try? await Docker.run(["rm", "-f", name], timeout: .seconds(60)) else {
            return "docker rm -f \(name) could not be run"
        }
        if !removed.succeeded && !removed.stderr.contains("No such container") {
            return "removing the systemd test container failed: \(removed)"
        }
        return nil
    }
}
