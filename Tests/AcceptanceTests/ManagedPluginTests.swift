import Foundation
import Glibc
import Testing

extension Acceptance {
    /// The managed plugin (issue 15, docs/managed-plugin.md): `docker plugin create` from the
    /// directory scripts/build-plugin makes, `enable`, a network with its driver and its IPAM,
    /// two containers that ping, and `disable` and `rm` leaving nothing behind.
    @Suite("Managed plugin", .serialized)
    struct ManagedPluginTests {
        @Test(
            "create, enable, network and IPAM vde-supervisor:latest, ping, a plug re-made in its container, disable, rm: nothing left"
        )
        func createEnablePingDisableRemove() async throws {
            let (plugin, network, endpoints) = try await SharedRootMount.with {
                try await ManagedPlugin.with { plugin in
                    print("docker plugin enable took \(plugin.enableTime)")
                    let (network, endpoints) = try await DockerScope.with { scope in
                        try await pingThroughThePlugin(scope)
                    }
                    return (plugin, network, endpoints)
                }
            }
            try await assertNothingLeft(plugin: plugin, network: network, taps: endpoints.map { Requests.tap(of: $0) })
        }

        /// A network of the plugin's driver and IPAM, two containers that ping each other; a
        /// killed plug comes back inside its container's namespace (which the plugin sees only
        /// through mount propagation); the network's switch is on the host for QEMU.
        /// Returns the network's ID and the endpoints' IDs.
        private func pingThroughThePlugin(_ scope: DockerScope) async throws -> (String, [String]) {
            let net = scope.name("net")
            let created = try await Docker.check([
                "network", "create", "-d", ManagedPlugin.name, "--ipam-driver", ManagedPlugin.name,
                "--label", Docker.label, "--subnet", "10.77.93.0/24", "--gateway", "10.77.93.1", net,
            ])
            let network = created.stdout.trimmingWhitespace
            do {
                let a = try await scope.container("a", network: "net", ip: "10.77.93.10")
                let b = try await scope.container("b", network: "net")
                #expect(b.ipAddress == "10.77.93.2", "the vde IPAM hands out the first free address after the gateway")
                for (from, to) in [("a", b.ipAddress), ("b", a.ipAddress)] {
                    let ping = try await scope.ping(from: from, to)
                    #expect(ping.succeeded, "\(from) pings \(to) through the managed plugin: \(ping)")
                }
                let ctl = ManagedPlugin.runDir + "/" + String(network.prefix(12)) + "/ctl"
                #expect(
                    TempDir.exists(ctl + "/ctl"), "the switch's socket is on the host at \(ctl), where QEMU finds it")

                // b's plug must be re-made in b's namespace, created after the plugin started.
                let plug = try #require(
                    HostInspector.plug2taps(ctlDir: ctl).first { $0.argv.last == b.tap },
                    "b's vde_plug2tap runs on the host (the plugin shares the host's PID namespace)")
                kill(plug.pid, SIGKILL)
                try await Poll.until("b's plug to be restarted inside b's namespace", deadline: .seconds(20)) {
                    HostInspector.plug2taps(ctlDir: ctl).contains { $0.pid != plug.pid && $0.argv.last == "eth0" }
                }
                try await Poll.until("a to ping b again after its plug was killed", deadline: .seconds(20)) {
                    try await scope.ping(from: "a", b.ipAddress, count: 1, wait: 1).succeeded
                }

                try await scope.removeContainer("a")
                try await scope.removeContainer("b")
                try await Docker.check(["network", "rm", net])
                return (network, [a.endpointID, b.endpointID])
            } catch {
                _ = await scope.cleanup()
                _ = try? await Docker.run(["network", "rm", net])
                throw error
            }
        }

        /// After `disable` and `rm`: no process of the plugin, no tap, nothing in its run dir,
        /// no socket dir of dockerd's for it, and no plugin.
        private func assertNothingLeft(plugin: ManagedPlugin, network: String, taps: [String]) async throws {
            let processes = HostInspector.vdeProcesses(
                mentioning: [network, ManagedPlugin.runDir + "/" + network.prefix(12) + "/"])
            #expect(processes.isEmpty, "no worker, switch or plug is left: \(processes)")
            let ofThePlugin = HostInspector.processes().filter {
                TempDir.readText("/proc/\($0.pid)/cgroup")?.contains(plugin.id) ?? false
            }
            #expect(ofThePlugin.isEmpty, "no process of the plugin's cgroup is left: \(ofThePlugin)")
            let leftTaps = taps.filter(HostInspector.linkExists)
            #expect(leftTaps.isEmpty, "no tap is left: \(leftTaps)")
            // `--stop-networks-on-exit` stops every network and then removes the emptied run dir.
            let runDirEntries = (try? FileManager.default.contentsOfDirectory(atPath: ManagedPlugin.runDir)) ?? []
            #expect(
                !TempDir.exists(ManagedPlugin.runDir), "\(ManagedPlugin.runDir) is left (holding \(runDirEntries))")
            #expect(!TempDir.exists("/run/docker/plugins/" + plugin.id), "dockerd's socket dir of the plugin is gone")
            let listed = try await Docker.check(["plugin", "ls", "--format", "{{.Name}}"])
            #expect(!listed.stdout.contains(ManagedPlugin.name), "the plugin is removed: \(listed.stdout)")
        }
    }
}
