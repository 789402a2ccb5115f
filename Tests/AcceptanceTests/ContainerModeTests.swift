import Foundation
import Glibc
import Testing

extension Acceptance {
    /// Container mode (docs/container.md): the image `vde-supervisor:latest` run with README's
    /// `docker run` line serves the real plugin socket; dockerd and the docker CLI are real.
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct ContainerModeTests {
        /// Two containers ping; after `docker restart` of the plugin container they ping again
        /// (every process of the container is killed at the stop, also with `--pid host`; the
        /// new supervisor brings the network back from the state dir and re-plugs the taps from
        /// inside the containers); a container started after the plugin container is re-plugged
        /// after its plug is killed (its namespace's mount reached the plugin container: the
        /// `rslave` mount of Docker's netns dir); `docker stop` leaves no process, tap, socket or
        /// network dir on the host, and a `docker start` brings the network back again.
        @Test func containersPingAcrossRestartAndStopLeavesNothing() async throws {
            try await Docker.checkEnvironment()
            try await PluginContainer.with { plugin in
                var needles: [String] = []
                try await DockerScope.with { scope in
                    do {
                        needles = try await restartAndStop(plugin, scope)
                    } catch {
                        // The scope's cleanup removes the network through the plugin.
                        if try !(await plugin.isRunning()) {
                            _ = try? await Docker.run(["start", plugin.name])
                            try? await plugin.waitServing()
                        }
                        throw error
                    }
                }
                try await expectStopLeavesNothing(plugin, needles: needles)
            }
        }

        /// The scenario; returns what names the test's network in argv (for leftover checks).
        func restartAndStop(_ plugin: PluginContainer, _ scope: DockerScope) async throws -> [String] {
            let network = try await scope.network("net", ["--ipam-driver", "vde", "--subnet", "10.77.40.0/24"])
            let a = try await scope.container("a", network: "net", ip: "10.77.40.10")
            let b = try await scope.container("b", network: "net", ip: "10.77.40.11")
            let needles = [network, String(network.prefix(12)), a.tap, b.tap]
            let before = try await scope.ping(from: "a", b.ipAddress)
            #expect(before.succeeded, "a -> b before any restart: \(before)")
            #expect(!HostInspector.vdeProcesses(mentioning: needles).isEmpty, "no worker, switch or plug seen")
            try await expectHostPlugReaches(plugin, network: network, address: a.ipAddress)

            let restart = ContinuousClock.now
            try await Docker.check(["restart", plugin.name])
            let restarted = ContinuousClock.now
            try await plugin.waitServing()
            try await pingsAgain(scope, from: "a", to: b.ipAddress, what: "a -> b after docker restart")
            print(
                "measured: docker restart took \(restarted - restart); a -> b pinged again \(ContinuousClock.now - restarted) after it"
            )

            // A container that joined after the plugin container started: its namespace is a
            // mount dockerd made later, which the plugin reaches only through propagation.
            let c = try await scope.container("c", network: "net", ip: "10.77.40.12")
            try await pingsAgain(scope, from: "a", to: c.ipAddress, what: "a -> c")
            let plug = try #require(
                HostInspector.vdeProcesses(mentioning: [c.tap]).first { $0.program == "vde_plug2tap" },
                "c's plug (vde_plug2tap ... \(c.tap))")
            kill(plug.pid, SIGKILL)
            try await Poll.until("c's killed plug \(plug.pid) to be gone") {
                let state = HostInspector.processState(plug.pid)
                return state == nil || state == "Z"
            }
            try await pingsAgain(scope, from: "a", to: c.ipAddress, what: "a -> c after its plug was killed")

            let stop = ContinuousClock.now
            try await Docker.check(["stop", plugin.name])
            print("measured: docker stop took \(ContinuousClock.now - stop) with one network of three containers")
            try await expectNothingLeft(plugin, needles: needles + [c.tap])

            try await Docker.check(["start", plugin.name])
            try await plugin.waitServing()
            try await pingsAgain(scope, from: "a", to: b.ipAddress, what: "a -> b after docker stop and start")
            try await pingsAgain(scope, from: "b", to: c.ipAddress, what: "b -> c after docker stop and start")
            return needles + [c.tap]
        }

        /// What QEMU on the host does with `-netdev vde,sock=...`: a plug started on the host, in a
        /// namespace of its own, joins the switch the container made through the host's side of
        /// the run dir's mount, and pings a container.
        func expectHostPlugReaches(_ plugin: PluginContainer, network: String, address: String) async throws {
            let ctl = plugin.runDir + "/" + String(network.prefix(12)) + "/ctl"
            #expect(TempDir.exists(ctl), "the switch's ctl dir is not on the host at \(ctl)")
            try await NetNS.with(count: 1) { namespaces in
                let ns = namespaces[0]
                try await ns.withExternalPlug(
                    socketDir: ctl, address: "10.77.40.50/24", logPath: plugin.stateDir + "/../host-plug.log"
                ) { _, _ in
                    let out = try await ns.ping(address)
                    #expect(out.succeeded, "a plug on the host -> container \(address): \(out)")
                }
            }
        }

        /// Polls single pings until one answers (a restart or a re-plug takes a moment).
        func pingsAgain(_ scope: DockerScope, from: String, to address: String, what: String) async throws {
            try await Poll.until(what, deadline: .seconds(60), every: .milliseconds(200)) {
                try await scope.ping(from: from, address, count: 1, wait: 1).succeeded
            }
        }

        /// After the containers and the network are gone: `docker stop` of the plugin container
        /// leaves nothing either.
        func expectStopLeavesNothing(_ plugin: PluginContainer, needles: [String]) async throws {
            try await Docker.check(["stop", plugin.name])
            try await expectNothingLeft(plugin, needles: needles)
        }

        /// The container exited by itself on SIGTERM (status 0, not killed at the stop timeout),
        /// and nothing of the network runs or lies on the host: no process, no tap in the host's
        /// namespace, no plugin socket, nothing in the run dir.
        func expectNothingLeft(_ plugin: PluginContainer, needles: [String]) async throws {
            #expect(try await plugin.inspect("{{.State.ExitCode}}") == "0", "the supervisor did not exit 0 on SIGTERM")
            let processes = HostInspector.vdeProcesses(mentioning: needles)
            #expect(processes.isEmpty, "processes left after docker stop: \(processes)")
            let taps = needles.filter { HostInspector.linkExists($0) }
            #expect(taps.isEmpty, "taps left in the host's namespace: \(taps)")
            #expect(!TempDir.exists(SupervisorFixture.realSocket), "\(SupervisorFixture.realSocket) is left")
            let left = (try? FileManager.default.contentsOfDirectory(atPath: plugin.runDir)) ?? []
            #expect(left.isEmpty, "left in the run dir: \(left)")
        }
    }
}
