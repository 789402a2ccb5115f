import Foundation
import Glibc
import Shared
import Testing

extension Acceptance.DockerTests {
    /// `docker rm -f` of a container while the supervisor is down: dockerd gives up on the
    /// plugin and moves the tap back to the host, and its namespace file goes or stays behind
    /// unmounted. The restarted supervisor must take that as evidence at once: no plug is ever
    /// started on that tap, the endpoint is forgotten, its address is free, so that
    /// `docker run --ip` with the same address succeeds (polled; no timing is asserted).
    @Test func containerRemovedWhileSupervisorWasDownIsForgottenWithoutAPlug() async throws {
        try await Docker.checkEnvironment()
        try await TempDir.with("rmdown") { root in
            let scope = DockerScope()
            do {
                let gone = try await SupervisorFixture.with(socket: SupervisorFixture.realSocket, directory: root) {
                    _ in
                    await Docker.removeLabelledLeftovers()
                    _ = try await scope.network("rd", ["--subnet", "10.77.14.0/24"])
                    try await scope.container("a", network: "rd", ip: "10.77.14.10")
                    let b = try await scope.container("b", network: "rd", ip: "10.77.14.11")
                    let ping = try await scope.ping(from: "a", "10.77.14.11")
                    #expect(ping.succeeded, "before the supervisor stopped: \(ping)")
                    return b
                }
                try await scope.removeContainer("b")

                try await SupervisorFixture.with(socket: SupervisorFixture.realSocket, directory: root) { supervisor in
                    try await Poll.until(
                        "docker run --ip 10.77.14.11 (the removed container's address) to succeed",
                        deadline: .seconds(90), every: .seconds(1)
                    ) {
                        let run = try await scope.startContainer("c", network: "rd", ip: "10.77.14.11")
                        if !run.succeeded { _ = try? await Docker.run(["rm", "-f", scope.name("c")]) }
                        return run.succeeded
                    }
                    let log = TempDir.readText(supervisor.logPath) ?? ""
                    let lines = log.split(separator: "\n")
                    #expect(
                        !lines.contains { $0.contains("plug started") && $0.contains(gone.endpointID) },
                        "a plug was started for the removed container's endpoint \(gone.endpointID)")
                    #expect(
                        lines.contains {
                            $0.contains("forgot a stale endpoint")
                                && $0.contains(EndpointID(stringLiteral: gone.endpointID).short)
                        },
                        "the supervisor did not say it forgot the endpoint:\n\(supervisor.logTail())")
                    #expect(
                        !supervisor.stateText().contains(gone.endpointID),
                        "the state file still has the removed endpoint")
                    #expect(!HostInspector.linkExists(gone.tap), "the removed container's tap is left")
                    let ping = try await scope.ping(from: "a", "10.77.14.11")
                    #expect(ping.succeeded, "a -> the new container with the freed address: \(ping)")
                    let failures = await scope.cleanup()
                    #expect(failures.isEmpty, "removing the containers and the network: \(failures)")
                }
            } catch {
                _ = try? await SupervisorFixture.with(socket: SupervisorFixture.realSocket, directory: root) { _ in
                    await scope.cleanup()
                }
                throw error
            }
        }
    }
}
