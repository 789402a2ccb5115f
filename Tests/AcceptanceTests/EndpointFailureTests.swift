import Foundation
import Glibc
import Shared
import Testing

extension Acceptance.PluginProtocolTests {
    /// The worker process of `network` (the first found).
    static func workerPID(of network: String) async throws -> Int32 {
        try await Poll.value("the vde-networker of network \(NetworkID(stringLiteral: network).short)") {
            HostInspector.vdeProcesses(mentioning: ["--network-id \(network)", network]).first {
                $0.program == "vde-networker"
            }?.pid
        }
    }

    /// DeleteEndpoint asks the worker first: when the worker cannot do it (here it is stopped,
    /// then killed by the heartbeat), the call fails and the endpoint stays recorded, with its
    /// address; a retry once the worker is back succeeds. (It used to forget the endpoint first
    /// and swallow the worker's error.)
    @Test func deleteEndpointThatTheWorkerCannotDoFailsAndKeepsTheEndpoint() async throws {
        try await SupervisorFixture.with { supervisor in
            let client = supervisor.client
            let network = IDs.dockerID()
            let endpoint = IDs.dockerID()
            try await client.ok(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(network, pool: "10.203.1.0/24", gateway: "10.203.1.1/24"))
            try await client.ok(
                "/NetworkDriver.CreateEndpoint",
                Requests.createEndpoint(network: network, endpoint: endpoint, address: "10.203.1.5/24"))
            let worker = try await Self.workerPID(of: network)
            kill(worker, SIGSTOP)
            defer { kill(worker, SIGCONT) }

            let refused = try await client.refused(
                "/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint))
            #expect(refused.message.contains("worker"), "refusal: \(refused.message)")
            #expect(
                supervisor.stateText().contains(endpoint),
                "the endpoint was forgotten although its worker did not remove it")

            // dockerd retries; the restarted worker restored the endpoint and now removes it.
            try await Poll.until(
                "DeleteEndpoint to succeed once the worker is back", deadline: .seconds(60), every: .milliseconds(500)
            ) {
                try await client.post("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint)).isSuccess
            }
            #expect(!supervisor.stateText().contains(endpoint))
            try await Poll.until("the endpoint's tap to be deleted") {
                !HostInspector.linkExists(Requests.tap(of: endpoint))
            }
            try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
        }
    }

    /// A worker killed while it adds an endpoint (it made the tap, and waits for a port of a
    /// full switch): the add fails, and its tap does not stay behind (the supervisor undoes the
    /// add, and the next worker deletes taps of unfinished adds).
    @Test func workerKilledDuringAnAddLeavesNoTap() async throws {
        try await SupervisorFixture.with { supervisor in
            let client = supervisor.client
            let network = IDs.dockerID()
            let first = IDs.dockerID()
            let cut = IDs.dockerID()
            try await client.ok(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(
                    network, pool: "10.203.2.0/24", gateway: "10.203.2.1/24", options: ["num_switchports": "1"]))
            try await client.ok(
                "/NetworkDriver.CreateEndpoint",
                Requests.createEndpoint(network: network, endpoint: first, address: "10.203.2.5/24"))
            let worker = try await Self.workerPID(of: network)

            let adding = Task {
                try await client.post(
                    "/NetworkDriver.CreateEndpoint",
                    Requests.createEndpoint(network: network, endpoint: cut, address: "10.203.2.6/24"))
            }
            try await Poll.until("the add to make its tap", deadline: .seconds(10), every: .milliseconds(2)) {
                HostInspector.linkExists(Requests.tap(of: cut))
            }
            kill(worker, SIGKILL)
            let madeBeforeKill = HostInspector.linkExists(Requests.tap(of: cut))
            #expect(madeBeforeKill, "the add ended before the kill; the test proves nothing")
            let reply = try await adding.value
            #expect(!reply.isSuccess, "the add should fail when its worker is killed: \(reply)")

            try await Poll.until("the tap of the failed add to be deleted", deadline: .seconds(30)) {
                !HostInspector.linkExists(Requests.tap(of: cut))
            }
            #expect(!supervisor.stateText().contains(cut))
            try await client.ok(
                "/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, first), timeout: .seconds(30))
            try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
        }
    }

    /// DeleteNetwork while a CreateEndpoint waits for the worker is refused: the worker would
    /// make a tap nobody records. Once the add is over, the network goes.
    @Test func deleteNetworkWhileAnEndpointIsBeingAddedIsRefused() async throws {
        // trace: the lines to the worker are logged, so the test sees when the add reached it.
        try await SupervisorFixture.with(extraArguments: ["--log-level", "trace"]) { supervisor in
            let client = supervisor.client
            let network = IDs.dockerID()
            let endpoint = IDs.dockerID()
            try await client.ok(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(network, pool: "10.203.3.0/24", gateway: "10.203.3.1/24"))
            let worker = try await Self.workerPID(of: network)
            // A stopped worker holds the add until the heartbeat kills it.
            kill(worker, SIGSTOP)
            defer { kill(worker, SIGCONT) }
            let adding = Task {
                try await client.post(
                    "/NetworkDriver.CreateEndpoint",
                    Requests.createEndpoint(network: network, endpoint: endpoint, address: "10.203.3.5/24"))
            }
            try await Poll.until(
                "the add to reach the supervisor's log", deadline: .seconds(10), every: .milliseconds(20)
            ) {
                (TempDir.readText(supervisor.logPath) ?? "").split(separator: "\n").contains {
                    $0.contains("to worker") && $0.contains("addEndpoint") && $0.contains(endpoint)
                }
            }
            let refused = try await client.refused("/NetworkDriver.DeleteNetwork", Requests.network(network))
            #expect(refused.message.contains("new endpoint"), "refusal: \(refused.message)")
            #expect(supervisor.stateText().contains(network))

            _ = try await adding.value
            try await Poll.until(
                "DeleteNetwork to succeed once the add is over", deadline: .seconds(60), every: .milliseconds(500)
            ) {
                try await client.post("/NetworkDriver.DeleteNetwork", Requests.network(network)).isSuccess
            }
            #expect(!supervisor.stateText().contains(network))
            #expect(!HostInspector.linkExists(Requests.tap(of: endpoint)), "the add's tap is left")
        }
    }
}
