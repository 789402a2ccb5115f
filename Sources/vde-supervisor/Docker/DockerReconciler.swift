import Logging
import ServiceLifecycle
import Shared

/// After a start, asks dockerd once which networks still exist and forgets the vde networks it
/// no longer knows: a `docker network rm` while the supervisor was down never reached us
/// (dockerd only logs the failed DeleteNetwork and forgets the network).
///
/// Runs in the background, never inside a plugin call (calling the Docker API from a handler
/// can deadlock dockerd), and waits for dockerd to come up (at boot the plugin starts first).
struct DockerReconciler: Service, CustomStringConvertible {
    let plugin: VDEPlugin
    let dockerSocket: String
    let logger: Logger
    var retryInterval: Duration = .seconds(2)
    var giveUpAfter: Duration = .seconds(600)

    var description: String { "DockerReconciler" }

    /// The part of dockerd's `GET /networks` answer that matters here.
    struct DockerNetwork: Decodable {
        var Id: String
        var Driver: String?
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await reconcileOnce() }
        // A service that returns ends the group: wait for shutdown like the others.
        try? await gracefulShutdown()
    }

    /// One reconciliation. The networks it may forget are those the plugin knew *before* it
    /// asked dockerd: a network created while the question was on its way is missing from
    /// dockerd's answer (or from an answer dockerd built just before), and is not evidence.
    func reconcileOnce() async {
        guard await plugin.networkCount > 0 else { return }
        let started = ContinuousClock.now
        while !Task.isCancelled && ContinuousClock.now - started < giveUpAfter {
            let known = await plugin.networkIDs
            if let ids = await Self.dockerNetworkIDs(socket: dockerSocket) {
                await plugin.forgetNetworks(notIn: ids, among: known)
                return
            }
            do { try await Task.sleep(for: retryInterval) } catch { return }
        }
        if !Task.isCancelled {
            logger.notice(
                "dockerd did not answer; networks removed in Docker while the supervisor was down are kept",
                metadata: ["dockerSocket": "\(dockerSocket)"])
        }
    }

    /// Every network ID dockerd knows, or nil when it does not answer sensibly.
    static func dockerNetworkIDs(socket: String) async -> Set<String>? {
        // A blocking exchange of up to 5 s per step: on a thread of its own, not the cooperative pool.
        await Blocking.run {
            guard
                let reply = try? ControlClient.get(
                    socketPath: socket, path: "/networks", httpVersion: "1.0", timeoutSeconds: 5),
                reply.status == 200,
                let networks = try? JSONCoding.decode([DockerNetwork].self, from: reply.body),
                // Docker always has its built-in networks; an empty list is not to be trusted.
                !networks.isEmpty
            else { return nil }
            return Set(networks.map(\.Id))
        }
    }
}

extension VDEPlugin {
    var networkCount: Int { state.networks.count }

    /// The IDs of the networks in the state now.
    var networkIDs: Set<NetworkID> { Set(state.networks.keys) }

    /// Forgets the networks of `known` (the plugin's networks when dockerd was asked) whose IDs
    /// dockerd does not know: stops their workers (and so their own switches), frees their
    /// pools, and records it. A network created since is not in `known` and stays.
    func forgetNetworks(notIn dockerIDs: Set<String>, among known: Set<NetworkID>) async {
        let stale = known.filter {
            state.networks[$0] != nil && !dockerIDs.contains($0.rawValue) && live[$0]?.change == nil
        }.sorted()
        guard !stale.isEmpty else { return }
        var newState = state
        for id in stale {
            newState.networks[id] = nil
            newState.ipam.removePools(ofNetwork: id)
        }
        do {
            try commit(newState)
        } catch {
            logger.error(
                "could not forget networks unknown to Docker",
                metadata: ["error": "\(VDEError(wrapping: error).message)"])
            return
        }
        for id in stale {
            logger.warning(
                "forgot a network that Docker no longer knows (removed while the supervisor was down)",
                metadata: ["network": "\(id.short)"])
            let worker = live.removeValue(forKey: id)?.worker
            await worker?.stop()
        }
    }
}
