import Glibc

/// Docker accepts `rshared` and `rslave` bind mounts only from a shared (or slave) mount, and a
/// mount the plugin receives from the host with `rslave` sees the host's later mounts (dockerd's
/// sandbox keys) only when the host's side is shared. Where systemd runs, `/` is shared; on this
/// machine no systemd runs and `/` is private, so the container-mode and managed-plugin tests
/// make `/` shared for their duration, as a systemd host has it, and private again after (only
/// when they changed it). Nothing is mounted or unmounted.
enum SharedRootMount {
    static func propagation() async throws -> String {
        try await Command.check(["/usr/bin/findmnt", "-n", "-o", "PROPAGATION", "/"], timeout: .seconds(10)).stdout
            .trimmingWhitespace
    }

    static func with<T>(_ body: () async throws -> T) async throws -> T {
        let changed = try await propagation() == "private"
        if changed { try set(UInt(MS_SHARED), "--make-shared") }
        defer { if changed { try? set(UInt(MS_PRIVATE), "--make-private") } }
        return try await body()
    }

    private static func set(_ flag: UInt, _ name: String) throws {
        guard mount("none", "/", nil, flag, nil) == 0 else {
            throw AcceptanceFailure("mount \(name) / failed: errno \(errno)")
        }
    }
}
