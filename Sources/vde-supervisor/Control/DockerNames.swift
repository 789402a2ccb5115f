import Shared

/// Docker's names for networks and containers, asked of dockerd by `vde-supervisor status`
/// (never by the plugin's handlers: a plugin that calls dockerd while dockerd waits on it can
/// deadlock). dockerd absent, not answering, or not knowing a network: no names, no error.
struct DockerNames: Sendable, Equatable {
    struct Network: Sendable, Equatable {
        var name: String
        /// Container names by endpoint ID.
        var containers: [String: String]
        /// Container IDs by endpoint ID.
        var containerIDs: [String: String] = [:]
        /// The network's full ID.
        var id: String = ""
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
        var containerIDs: [String: String] = [:]
        for (containerID, container) in reply.Containers ?? [:] {
            guard let endpoint = container.EndpointID else { continue }
            containerIDs[endpoint] = containerID
            guard let name = container.Name, !name.isEmpty else { continue }
            containers[endpoint] = name
        }
        return Network(name: reply.Name, containers: containers, containerIDs: containerIDs, id: reply.Id)
    }

    /// Asks dockerd about one network by what the user typed (dockerd takes a name, an ID or
    /// an ID prefix); nil when dockerd does not answer or knows no such network, or the text
    /// could not be a network name (`[A-Za-z0-9_.-]`, so it goes into the URL as it is).
    static func inspect(socket: String, network: String, timeoutSeconds: Int = 2) -> Network? {
        guard !network.isEmpty, network.utf8.count <= 255,
            network.utf8.allSatisfy({ c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
                    || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "-")
            }),
            network != ".", network != ".."
        else { return nil }
        guard
            let reply = try? ControlClient.get(
                socketPath: socket, path: "/networks/\(network)", httpVersion: "1.0", timeoutSeconds: timeoutSeconds),
            reply.status == 200
        else { return nil }
        return decode(reply.body)
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
            for c in report.networks[index].captures?.indices ?? [].indices {
                guard let endpoint = report.networks[index].captures?[c].endpoint else { continue }
                report.networks[index].captures?[c].container = network.containers[endpoint]
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

/// What `vde-supervisor link NETWORK [CONTAINER]` names, turned into what the supervisor takes:
/// a network ID (or the prefix as typed, when dockerd does not know the name) and an endpoint
/// ID (or prefix). Docker names are looked up here, in the CLI, through ``DockerNames``.
struct LinkTarget: Sendable, Equatable {
    /// A full network ID from dockerd, or the user's text (an ID prefix for the supervisor).
    var network: String
    /// A full endpoint ID (a container resolved through dockerd), or the user's text (an
    /// endpoint ID prefix); nil: the whole network.
    var endpoint: String?
    /// What dockerd said about the network; nil when it did not answer or know it.
    var docker: DockerNames.Network?

    struct Failure: Error, Equatable {
        var message: String
    }

    /// `container` is matched against the network's containers as dockerd lists them: a name,
    /// then a full ID, then a unique ID prefix; otherwise it is passed on as an endpoint ID prefix.
    static func resolve(network: String, container: String?, docker: DockerNames.Network?) throws(Failure) -> LinkTarget
    {
        let networkID = docker.flatMap { $0.id.isEmpty ? nil : $0.id } ?? network
        var target = LinkTarget(network: networkID, endpoint: container, docker: docker)
        guard let container, let docker else { return target }
        if let byName = docker.containers.first(where: { $0.value == container || $0.value == "/" + container }) {
            target.endpoint = byName.key
            return target
        }
        let byID = docker.containerIDs.filter { $0.value == container }
        let byPrefix = byID.isEmpty ? docker.containerIDs.filter { $0.value.hasPrefix(container) } : byID
        if byPrefix.count > 1 {
            let names = byPrefix.map { docker.containers[$0.key] ?? String($0.value.prefix(12)) }.sorted()
            throw Failure(
                message: "'\(UntrustedText(container))' starts the IDs of \(byPrefix.count) containers on network "
                    + "\(docker.name) (\(names.joined(separator: ", "))); give more of the ID or a name")
        }
        if let only = byPrefix.first { target.endpoint = only.key }
        return target
    }
}
