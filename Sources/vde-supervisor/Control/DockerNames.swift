import Shared

/// Docker's names for networks and containers, asked of dockerd by `vde-supervisor status`
/// (never by the plugin's handlers: a plugin that calls dockerd while dockerd waits on it can
/// deadlock). dockerd absent, not answering, or not knowing a network: no names, no error.
struct DockerNames: Sendable, Equatable {
    struct Network: Sendable, Equatable {
        var name: String
        /// Container names by endpoint ID.
        var containers: [String: String]
    }

    /// By network ID.
    var networks: [String: Network] = [:]

    /// The part of `GET /networks/ID` that matters here.
    struct InspectReply: Decodable {
        struct Container: Decodable {
            var Name: String?
            var EndpointID: String?
        }

        var Id: String
        var Name: String
        var Containers: [String: Container]?
    }

    /// Asks dockerd at `socket` about each of `networkIDs`, each exchange within `timeoutSeconds`;
    /// stops at the first that gets no answer at all (dockerd is not there).
    static func fetch(socket: String, networkIDs: [String], timeoutSeconds: Int = 2) -> DockerNames {
        var names = DockerNames()
        for id in networkIDs {
            let reply: (status: Int, body: [UInt8])
            do {
                reply = try ControlClient.get(
                    socketPath: socket, path: "/networks/\(id)", httpVersion: "1.0", timeoutSeconds: timeoutSeconds)
            } catch {
                break
            }
            guard reply.status == 200, let network = decode(reply.body, id: id) else { continue }
            names.networks[id] = network
        }
        return names
    }

    /// The names in dockerd's answer; nil when it is not one, or (given `id`) about another network.
    static func decode(_ body: [UInt8], id: String? = nil) -> Network? {
        guard let reply = try? JSONCoding.decode(InspectReply.self, from: body), id == nil || reply.Id == id else {
            return nil
        }
        var containers: [String: String] = [:]
        for container in (reply.Containers ?? [:]).values {
            guard let endpoint = container.EndpointID, let name = container.Name, !name.isEmpty else { continue }
            containers[endpoint] = name
        }
        return Network(name: reply.Name, containers: containers)
    }

    /// Puts the names into `report` (network `name`, endpoint `container`).
    func label(_ report: inout StatusReport) {
        for index in report.networks.indices {
            guard let network = networks[report.networks[index].id] else { continue }
            report.networks[index].name = network.name
            for e in report.networks[index].endpoints.indices {
                report.networks[index].endpoints[e].container =
                    network.containers[report.networks[index].endpoints[e].id]
            }
        }
    }
}

/// Which networks `status ARGUMENT` shows: those Docker names so; else those whose ID starts
/// with it; else those with an endpoint of a container Docker names so.
enum NetworkSelection {
    static func select(_ argument: String, in networks: [StatusReport.NetworkInfo]) -> [StatusReport.NetworkInfo] {
        let byName = networks.filter { $0.name == argument }
        if !byName.isEmpty { return byName }
        let byID = networks.filter { $0.id.hasPrefix(argument) }
        if !byID.isEmpty { return byID }
        return networks.filter { network in network.endpoints.contains { $0.container == argument } }
    }
}
