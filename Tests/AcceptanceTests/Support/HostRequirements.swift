import Foundation
import Glibc

/// Checks that this machine can run the acceptance suites, and fails with what to do if not.
/// Nothing is skipped silently: a missing tool is a failure.
enum HostRequirements {
    static let tools = ["/usr/bin/vde_switch", "/usr/bin/vde_plug2tap"]

    static func check() throws {
        guard geteuid() == 0 else {
            throw AcceptanceFailure(
                "the acceptance tests need root (taps, network namespaces, dockerd): \(runScriptsTestHint) as root")
        }
        for tool in tools + [NetNS.ip, NetNS.busybox] where !FileManager.default.isExecutableFile(atPath: tool) {
            throw AcceptanceFailure("\(tool) is missing: \(runScriptsTestHint)")
        }
        guard TempDir.exists("/dev/net/tun") else {
            throw AcceptanceFailure("/dev/net/tun is missing: taps cannot be made on this machine")
        }
    }
}
