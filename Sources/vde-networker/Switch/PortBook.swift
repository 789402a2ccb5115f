import Shared

/// The worker's last knowledge of its switch's ports in use: each port's client connections
/// (their descriptions: program and pid) and the source MACs seen on it. Kept current by
/// ``PortEvent``s and replaced by what `port/print` and `hash/print` say whenever the switch is
/// asked; read when the switch dies, when asking it is no longer possible.
struct PortBook: Sendable, Equatable {
    struct Port: Sendable, Equatable {
        /// Client connections by the switch's endpoint id; the description once known.
        var endpoints: [Int: String?] = [:]
        var macAddresses: Set<String> = []
    }

    private(set) var ports: [Int: Port] = [:]

    mutating func apply(_ event: PortEvent) {
        switch event {
        case .endpointAdded(let port, let id):
            ports[port, default: Port()].endpoints[id] = .some(nil)
        case .endpointDescribed(let port, let id, let description):
            ports[port, default: Port()].endpoints[id] = description
        case .endpointRemoved(let port, let id):
            ports[port]?.endpoints.removeValue(forKey: id)
            if ports[port]?.endpoints.isEmpty == true { ports.removeValue(forKey: port) }
        case .portRemoved(let port):
            ports.removeValue(forKey: port)
        case .macLearnt(let mac, let port):
            // A MAC seen on one port is no longer on another (a VM that moved).
            for other in ports.keys where other != port { ports[other]?.macAddresses.remove(mac) }
            ports[port, default: Port()].macAddresses.insert(mac)
        }
    }

    /// Takes what the switch says now (`port/allprint`'s active ports; `hash/print` when it
    /// answered). A port whose connections are the same as before keeps the MACs learnt
    /// earlier that the switch's table has since let expire.
    mutating func replace(entries: [PortEntry], macTable: [MACTableEntry]?) {
        var fresh: [Int: Port] = [:]
        for entry in entries where entry.active {
            let port = entry.counters.port
            var known = Port()
            for endpoint in entry.endpoints { known.endpoints[endpoint.id] = endpoint.program }
            if let old = ports[port], Set(old.endpoints.keys) == Set(known.endpoints.keys) {
                known.macAddresses = old.macAddresses
            }
            fresh[port] = known
        }
        for entry in macTable ?? [] {
            for other in fresh.keys where other != entry.port { fresh[other]?.macAddresses.remove(entry.macAddress) }
            fresh[entry.port]?.macAddresses.insert(entry.macAddress)
        }
        ports = fresh
    }

    /// The ports none of whose clients is one of `ourPIDs` (the worker's plugs), by port
    /// number, each with its counters when `counters` has them.
    func externalPorts(ourPIDs: Set<Int32>, counters: [Int: PortCounters] = [:]) -> [ExternalPort] {
        ports.keys.sorted().compactMap { number -> ExternalPort? in
            guard let port = ports[number] else { return nil }
            let descriptions = port.endpoints.keys.sorted().compactMap { port.endpoints[$0] ?? nil }
            let pids = descriptions.compactMap(PortReport.processID(in:))
            guard !pids.contains(where: ourPIDs.contains) else { return nil }
            let peer = descriptions.first
            return ExternalPort(
                port: number, peer: peer, program: peer.flatMap(PortEntry.programName(of:)), pid: pids.first,
                macAddresses: port.macAddresses.sorted(), counters: counters[number])
        }
    }
}

/// What the worker keeps about external ports (see Worker+ExternalPorts.swift).
struct ExternalPortsState {
    var book = PortBook()
    var watch: PortEventWatch?
    /// Bumped at each new switch: news from an older switch's watch is dropped.
    var generation: UInt64 = 0
    /// Pids of every plug this worker installed on the current switch. Kept beside the running
    /// plugs: when the switch dies, its plugs exit too, and their exits may reach the worker
    /// before the switch's (measured: a container's port was then taken for an external one).
    var ownPIDs: Set<Int32> = []
    /// Most recent last; at most ``ExternalPortsState/lostKept``.
    var lost: [LostExternalPorts] = []

    static let lostKept = 4
}
