import Glibc
import Shared

/// Gathers the status report: the state, each worker's health, and the counters the workers
/// read from their switches. A worker that does not answer within `workerTimeout` is shown as
/// unresponsive; the report never waits longer than that. A worker not started or adopted yet
/// (`starting`: a new network, or one still waiting its turn in a restore) is not asked: it
/// shows as `starting` at once instead of holding the report for `workerTimeout`.
extension VDEPlugin {
    static let statusWorkerTimeout: Duration = .milliseconds(800)

    func statusReport(startedAt: ContinuousClock.Instant) async -> StatusReport {
        let records = state.networks.values.sorted {
            $0.createdAt == $1.createdAt ? $0.id < $1.id : $0.createdAt < $1.createdAt
        }
        let workers = live.compactMapValues(\.worker)
        // Every worker at once: its summary, and (unless it is not started or adopted yet) its
        // status, each bounded by `statusWorkerTimeout`.
        typealias Answer = (summary: NetworkWorker.Summary, reply: WorkerStatus?)
        let answers: [NetworkID: Answer] = await withTaskGroup(of: (NetworkID, Answer).self) { group in
            for record in records {
                guard let worker = workers[record.id] else { continue }
                group.addTask {
                    let summary = await worker.summary()
                    guard summary.phase != .starting else { return (record.id, (summary, nil)) }
                    let reply = try? await worker.status(timeout: Self.statusWorkerTimeout)
                    return (record.id, (summary, reply))
                }
            }
            var all: [NetworkID: Answer] = [:]
            for await (id, answer) in group { all[id] = answer }
            return all
        }
        let networks = records.map { record in
            networkInfo(record, summary: answers[record.id]?.summary, reply: answers[record.id]?.reply)
        }
        let uptime = ContinuousClock.now - startedAt
        return StatusReport(
            supervisor: StatusReport.SupervisorInfo(
                pid: getpid(), pluginSocket: configuration.socketPath, stateDir: configuration.stateDir,
                uptimeSeconds: uptime.components.seconds, statusLine: await statusLine()),
            networks: networks,
            healthy: networks.allSatisfy(\.healthy))
    }

    private func networkInfo(_ record: NetworkRecord, summary: NetworkWorker.Summary?, reply: WorkerStatus?)
        -> StatusReport.NetworkInfo
    {
        var workerInfo = StatusReport.WorkerInfo(
            pid: nil, state: "stopped", uptimeSeconds: nil, restarts: 0, lastError: nil)
        if let summary {
            workerInfo.pid = summary.pid
            workerInfo.state =
                (summary.phase == .running && reply == nil) ? "unresponsive" : summary.phase.rawValue
            workerInfo.restarts = summary.restarts
            workerInfo.lastError = summary.lastError
            if let started = summary.startedAt, summary.phase == .running {
                workerInfo.uptimeSeconds = (ContinuousClock.now - started).components.seconds
            }
        }
        let switchReport = reply?.switch ?? live[record.id]?.switchStatus
        let statuses = Dictionary((reply?.endpoints ?? []).map { ($0.endpointID, $0) }, uniquingKeysWith: { a, _ in a })
        let endpoints = record.endpoints.values.sorted { $0.id < $1.id }.map { endpoint -> StatusReport.EndpointInfo in
            let status = statuses[endpoint.id]
            return StatusReport.EndpointInfo(
                id: endpoint.id.rawValue, shortID: endpoint.id.short, tap: endpoint.tapName.rawValue,
                macAddress: endpoint.macAddress.rawValue, ipv4: endpoint.address, ipv6: endpoint.addressIPv6,
                sandbox: endpoint.sandboxKey?.rawValue,
                state: status?.state.rawValue ?? "unknown", plugPID: status?.plugPID, switchPort: status?.port,
                counters: status?.counters.map(Self.counters), detail: status?.detail,
                link: endpoint.link.map(LinkInfo.init), linkManagementSocket: status?.linkManagementSocket)
        }
        // Joined endpoints must be plugged; an endpoint not yet joined or left may be unplugged;
        // one whose cable the user pulled is down as asked.
        let uplink = record.switchSpec.uplink.map { url in
            Self.uplinkInfo(url: url, reply: reply?.uplink)
        }
        let endpointsHealthy = endpoints.allSatisfy { endpoint in
            endpoint.state == "plugged" || (endpoint.sandbox == nil && endpoint.state == "unplugged")
                || (endpoint.state == PlugState.linkDown.rawValue && endpoint.link?.down == true)
        }
        return StatusReport.NetworkInfo(
            id: record.id.rawValue, shortID: record.id.short,
            subnets: (record.ipv4Data + record.ipv6Data).map(\.Pool),
            gateways: (record.ipv4Data + record.ipv6Data).compactMap(\.Gateway),
            switch: StatusReport.SwitchInfo(
                ctlDir: record.switchSpec.paths.ctlDir,
                managementSocket: record.switchSpec.paths.managementSocket(switchStartedByPlugin: record.ownsSwitch),
                ownership: record.ownsSwitch ? "own" : "external", pid: switchReport?.pid,
                numPorts: record.switchSpec.numPorts),
            worker: workerInfo,
            healthy: workerInfo.state == "running" && endpointsHealthy
                && (uplink.map { $0.state == "running" } ?? true),
            endpoints: endpoints,
            otherPorts: Self.otherPorts(reply),
            lostPorts: reply?.lostExternalPorts.map { $0.map(Self.lostPorts) },
            link: record.options.link.map { LinkInfo(LinkSettings(impairment: $0)) },
            captures: reply?.captures.flatMap { $0.isEmpty ? nil : $0.map(CaptureInfo.init) },
            uplink: uplink, mtu: record.switchSpec.mtu)
    }

    /// The recorded uplink with what the worker says of it (`unknown` when it said nothing).
    static func uplinkInfo(url: UplinkURL, reply: UplinkStatus?) -> StatusReport.UplinkInfo {
        StatusReport.UplinkInfo(
            url: url.rawValue, state: reply?.state.rawValue ?? "unknown", pid: reply?.pid,
            switchPort: reply?.counters?.port, counters: reply?.counters.map(counters),
            restarts: reply?.restarts ?? 0, detail: reply?.detail)
    }

    /// The worker's external ports with program, pid and MACs; a worker that sends only
    /// `otherPorts` (an older one) gives the ports and counters alone.
    static func otherPorts(_ reply: WorkerStatus?) -> [StatusReport.PortInfo] {
        guard let reply else { return [] }
        guard let external = reply.externalPorts else {
            return (reply.otherPorts ?? []).map {
                StatusReport.PortInfo(port: $0.port, peer: $0.peer, counters: counters($0), pid: $0.peerPID)
            }
        }
        return external.map {
            StatusReport.PortInfo(
                port: $0.port, peer: $0.peer, counters: counters($0.counters ?? PortCounters(port: $0.port)),
                program: $0.program, pid: $0.pid, macAddresses: $0.macAddresses)
        }
    }

    static func lostPorts(_ lost: LostExternalPorts) -> StatusReport.LostPorts {
        StatusReport.LostPorts(
            switchPID: lost.switchPID, detail: lost.detail, at: lost.at,
            ports: lost.ports.map {
                StatusReport.LostPort(
                    port: $0.port, peer: $0.peer, program: $0.program, pid: $0.pid, macAddresses: $0.macAddresses)
            })
    }

    static func counters(_ port: PortCounters) -> StatusReport.Counters {
        StatusReport.Counters(
            inPackets: port.inPackets, inBytes: port.inBytes, outPackets: port.outPackets, outBytes: port.outBytes)
    }
}
