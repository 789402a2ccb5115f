import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// The Debian package of scripts/package (docs/packaging.md) in a container of
    /// vde-test-systemd booted with a real systemd, installed, upgraded, removed and purged with
    /// the real dpkg.
    @Suite(.timeLimit(.minutes(15)))
    struct PackageTests {
        static let debInContainer = "/root/vde-supervisor.deb"
        static let dataPathPattern = "vde-networker|vde_switch|vde_plug2tap|vde-supervisor"

        @Test func installUpgradeRemovePurge() async throws {
            let deb = try DebianPackage.path()
            try await SystemdContainer.with { container in
                let before = try await DebianPackage.files(in: container)
                try await Docker.check(["cp", deb, "\(container.name):\(Self.debInContainer)"])
                try await install(container)
                let network = try await exerciseUpgrade(container)
                try await remove(container, network: network)
                try await container.check(["rm", "-f", Self.debInContainer])
                try await container.check(["dpkg", "--purge", DebianPackage.name], timeout: .seconds(120))
                let after = try await DebianPackage.files(in: container)
                let (added, removed) = DebianPackage.difference(before, after)
                let excused = before.symmetricDifference(after).count - added.count - removed.count
                print("file list after the purge: \(excused) changed path(s) under DebianPackage.notOurs")
                #expect(added.isEmpty, "files left behind after the purge: \(added)")
                #expect(removed.isEmpty, "files the package's install/purge deleted that were there before: \(removed)")
            }
        }

        /// dpkg -i: the socket enabled and listening, the service waiting for the first connection,
        /// which starts it; `vde-supervisor status` answers.
        private func install(_ container: SystemdContainer) async throws {
            try await container.check(["dpkg", "-i", Self.debInContainer], timeout: .seconds(120))
            #expect(
                try await container.check(["systemctl", "is-enabled", "vde-supervisor.socket"]).stdout
                    .trimmingWhitespace == "enabled")
            #expect(try await container.property("ActiveState", of: "vde-supervisor.socket") == "active")
            #expect(
                try await container.property("ActiveState", of: "vde-supervisor.service") == "inactive",
                "the service must wait for the first connection")
            let version = try await container.check(["vde-supervisor", "--version"]).stdout.trimmingWhitespace
            #expect(version == Installation.version, "the installed vde-supervisor --version")
            for path in [
                "/usr/lib/vde-supervisor/vde-networker", "/usr/lib/vde-supervisor/vde-capture.so",
                "/usr/share/man/man1/vde-supervisor.1.gz", "/usr/share/bash-completion/completions/vde-supervisor",
                "/lib/systemd/system/vde-supervisor.service", "/usr/share/doc/vde-supervisor/copyright",
            ] {
                #expect(try await container.exec(["test", "-s", path]).succeeded, "\(path) is installed")
            }
            let activate = try await container.curlActivate()
            #expect(activate.succeeded && activate.stdout.contains("NetworkDriver"), "Plugin.Activate: \(activate)")
            _ = try await container.activeMainPID()
            let status = try await container.exec(["vde-supervisor", "status"])
            #expect(status.succeeded, "vde-supervisor status: \(status)")
        }

        /// The pid of the one worker of `network`.
        private func workerPID(_ container: SystemdContainer, _ network: String) async throws -> String {
            let found = try await container.exec(["pgrep", "-f", "vde-networker --network-id \(network)"])
            let pids = found.stdout.split(separator: "\n")
            guard pids.count == 1 else { throw AcceptanceFailure("expected one worker of \(network): \(found)") }
            return String(pids[0])
        }

        /// A network with two endpoints in namespaces and a probe every 10 ms between them,
        /// across `systemctl restart vde-supervisor` (the reference) and then across a reinstall of
        /// the package (dpkg's upgrade path): the same worker keeps running and the probes
        /// lose no more than across the restart. Returns the network's ID.
        private func exerciseUpgrade(_ container: SystemdContainer) async throws -> String {
            let network = IDs.dockerID()
            let created = try await container.pluginCall(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(network, pool: "10.233.1.0/24", gateway: "10.233.1.1/24"))
            guard created.status == 200 else { throw AcceptanceFailure("CreateNetwork: \(created)") }
            for index in 0..<2 {
                try await container.joinInNamespace(
                    network: network, endpoint: IDs.dockerID(), namespace: "pkg\(index)",
                    address: "10.233.1.\(index + 2)")
            }
            let worker = try await workerPID(container, network)
            let restart = try await probe(container, "systemctl restart") {
                try await container.check(["systemctl", "restart", "vde-supervisor.service"], timeout: .seconds(60))
            }
            let upgrade = try await probe(container, "dpkg -i (upgrade)") {
                let reinstall = try await container.check(["dpkg", "-i", Self.debInContainer], timeout: .seconds(120))
                #expect(!reinstall.output.contains("warning"), "dpkg -i over the installed package: \(reinstall)")
            }
            print("probes (10 ms) lost: across systemctl restart \(restart); across the package upgrade \(upgrade)")
            #expect(try await workerPID(container, network) == worker, "the upgrade must keep the running worker")
            for (what, summary) in [("systemctl restart", restart), ("the upgrade", upgrade)] {
                #expect(
                    summary.missing.allSatisfy { $0 == summary.transmitted } && summary.errors == 0,
                    "probes lost across \(what): \(summary)")
            }
            let status = try await container.exec(["vde-supervisor", "status"])
            #expect(status.succeeded, "vde-supervisor status after the upgrade: \(status)")
            return network
        }

        /// Runs `step` while probing between the two namespaces; the supervisor must be
        /// restarted by it (a new main pid) and the probes answered afterwards.
        private func probe(
            _ container: SystemdContainer, _ label: String, _ step: () async throws -> Void
        ) async throws -> RecoveryPinger.Summary {
            try await TempDir.with("pkgping") { dir in
                let pinger = try await container.startPinger(from: "pkg0", to: "10.233.1.3", dir: dir, label: label)
                do {
                    try await pinger.waitForReplies(20)
                    let supervisor = try await container.activeMainPID()
                    try await step()
                    _ = try await container.activeMainPID(other: supervisor)
                    try await pinger.waitForReplies(pinger.repliedSequences().count + 20)
                } catch {
                    await pinger.process.stop(SIGINT, grace: .seconds(5))
                    throw error
                }
                return try await pinger.stop()
            }
        }

        /// dpkg -r with the network running: the units stop, then every network; no process is
        /// left; the state is kept for a later install.
        private func remove(_ container: SystemdContainer, network: String) async throws {
            try await container.check(["dpkg", "-r", DebianPackage.name], timeout: .seconds(120))
            let left = try await container.exec(["pgrep", "-a", "-f", Self.dataPathPattern])
            #expect(left.stdout.trimmingWhitespace.isEmpty, "processes left after dpkg -r: \(left)")
            #expect(try await container.property("ActiveState", of: "vde-supervisor.socket") != "active")
            #expect(!(try await container.exec(["test", "-e", SystemdContainer.pluginSocket])).succeeded)
            #expect(!(try await container.exec(["test", "-e", "/usr/bin/vde-supervisor"])).succeeded)
            let state = try await container.exec(["cat", "/var/lib/vde-supervisor/state.json"])
            #expect(state.succeeded && state.stdout.contains(network), "the state is kept until purge: \(state)")
            for index in 0..<2 { try await container.check(["ip", "netns", "del", "pkg\(index)"]) }
        }
    }
}
