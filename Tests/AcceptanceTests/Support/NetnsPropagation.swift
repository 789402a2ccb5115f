import Foundation

/// Docker's network namespace directory as a shared mount, so that the namespace mounts dockerd
/// makes there for new containers also appear in a plugin's mount namespace (the managed
/// plugin mounts the host's /run with `rslave`).
///
/// On a host booted by systemd `/` and `/run` are shared mounts and nothing is needed. On this
/// test machine no systemd runs and `/` is private: without this, a container started after
/// the plugin has only an empty file at its sandbox key inside the plugin, and a plug that must
/// be restarted inside that namespace cannot be (measured: `nsenter: reassociate to namespace
/// 'ns/net' failed: Invalid argument`). The tests make the directory a shared mount for their
/// duration and undo it, unless it already was one.
enum NetnsPropagation {
    static let directory = "/run/docker/netns"

    /// The optional fields of the mount whose mount point is `path` (e.g. `shared:7`), or nil
    /// when `path` is not a mount point (the last such mount wins, as the kernel stacks them).
    static func propagation(of path: String) -> String?? {
        guard let table = TempDir.readText("/proc/self/mountinfo") else { return nil }
        var found: String??
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 6, fields[4] == path else { continue }
            let optional = fields[6...].prefix { $0 != "-" }.joined(separator: " ")
            found = .some(optional)
        }
        return found
    }

    static var isShared: Bool {
        guard case .some(.some(let fields)) = propagation(of: directory) else { return false }
        return fields.contains("shared:")
    }

    /// Runs `body` with ``directory`` a shared mount; a mount made here is undone afterwards.
    static func with<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard !isShared else { return try await body() }
        try await Command.check(["mount", "--rbind", directory, directory], timeout: .seconds(10))
        do {
            try await Command.check(["mount", "--make-shared", directory], timeout: .seconds(10))
        } catch {
            _ = try? await Command.run(["umount", directory], timeout: .seconds(10))
            throw error
        }
        let value: T
        do {
            value = try await body()
        } catch {
            _ = await undo()
            throw error
        }
        if let failure = await undo() { throw failure }
        return value
    }

    /// Detaches the bind mount made by ``with(_:)`` with what is mounted below it: the copies
    /// `--rbind` made of namespaces mounted before (the originals below are untouched; dockerd's
    /// `default`, its host namespace, is one, which keeps a plain `umount` busy for good).
    private static func undo() async -> AcceptanceFailure? {
        guard let result = try? await Command.run(["umount", "--lazy", directory], timeout: .seconds(10)) else {
            return AcceptanceFailure("umount \(directory) could not run")
        }
        return result.succeeded
            ? nil : AcceptanceFailure("cannot undo the shared bind mount on \(directory): \(result)")
    }
}
