import Foundation
import Shared

/// The .deb that scripts/package builds, and the file list of a container's root file system
/// that PackageTests compares before the install and after the purge.
enum DebianPackage {
    static let name = "vde-supervisor"

    /// dist/vde-supervisor_VERSION_amd64.deb of this checkout; fails with what to run when absent.
    static func path() throws -> String {
        let path = Repository.file("dist/\(name)_\(Installation.version)_amd64.deb")
        guard FileManager.default.fileExists(atPath: path) else {
            throw AcceptanceFailure("\(path) is missing: run scripts/package (\(runScriptsTestHint))")
        }
        return path
    }

    /// What changes in the file list between a clean system and one where the package was
    /// installed, used and purged, without being the package's: each prefix with the reason.
    static let notOurs: [(prefix: String, reason: String)] = [
        ("/var/lib/dpkg/", "dpkg's own database (status, status-old, triggers, the package's info files)"),
        ("/var/log/dpkg.log", "dpkg's log"),
        ("/var/log/journal/", "journald's files"),
        ("/run/systemd/", "systemd's runtime state (units, journal streams, transient state)"),
        ("/run/netns", "the namespaces the test made with ip netns (deleted; ip leaves its directory)"),
        (
            "/run/docker",
            "/run/docker/plugins, made by systemd for the socket (DirectoryMode=); it is dockerd's plugin directory, which exists anyway where Docker runs, and a tmpfs"
        ),
    ]

    /// Every path under / except /proc, /sys and /dev, sorted.
    static func files(in container: SystemdContainer) async throws -> Set<String> {
        let listing = try await container.check(
            [
                "find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", "-o", "-path", "/dev", ")", "-prune", "-o",
                "-print",
            ],
            timeout: .seconds(120))
        return Set(listing.stdout.split(separator: "\n").map(String.init))
    }

    /// Paths in one list and not the other that no `notOurs` prefix explains. A path that names
    /// the package is never excused, wherever it is (e.g. dpkg's `info/vde-supervisor.*` files).
    static func difference(_ before: Set<String>, _ after: Set<String>) -> (added: [String], removed: [String]) {
        func ours(_ path: String) -> Bool { path.contains(name) || !notOurs.contains { path.hasPrefix($0.prefix) } }
        return (after.subtracting(before).filter(ours).sorted(), before.subtracting(after).filter(ours).sorted())
    }
}
