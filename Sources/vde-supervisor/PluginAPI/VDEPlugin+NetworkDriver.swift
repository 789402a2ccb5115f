import Glibc
import Shared

/// The NetworkDriver calls. Field names and call order: docs/ and docker-plugin-protocol.md.
extension VDEPlugin {
    /// The worker first (it starts the switch, whose ownership the record keeps), then the
    /// record is made on a copy of the state, written, swapped in, and the reply sent. A failed
    /// save stops the worker again: nothing stays.
    func createNetwork(_ request: DockerAPI.CreateNetworkRequest) async throws -> DockerAPI.Empty {
        let id = request.NetworkID
        try AddressChecks.check(request)
        guard state.networks[id] == nil, live[id] == nil else {
            throw VDEError.conflict("network \(id.short) already exists")
        }
        let options = try NetworkOptions.parse(request.genericOptions, groupExists: Self.groupExists)
        if let mtu = options.mtu, mtu < NetworkOptions.minimumIPv6MTU, !(request.IPv6Data ?? []).isEmpty {
            throw VDEError.invalid(
                "option \(NetworkOptions.mtuKey)=\(mtu) is below \(NetworkOptions.minimumIPv6MTU), the smallest MTU IPv6 allows, and this network has an IPv6 subnet"
            )
        }
        let spec = try switchSpec(for: id, options: options)
        if options.link != nil { try spec.paths.checkLinksCanBeShaped() }

        // Reserved until committed (or failed): a concurrent create with the same paths is refused.
        live[id] = LiveNetwork(change: .creating(spec))
        let worker = makeWorker(networkID: id)
        let started: NetworkWorker.Started
        do {
            started = try await worker.start(NetworkWorker.Assignment(switchSpec: spec, endpoints: []))
        } catch {
            live[id] = nil
            throw error
        }

        var newState = state
        // The spec keeps the user's intent; whether the plugin started the switch is recorded apart.
        var record = NetworkRecord(
            id: id, options: options, switchSpec: spec, switchStarted: started.switchStatus.owned,
            ipv4Data: request.IPv4Data ?? [], ipv6Data: request.IPv6Data ?? [],
            poolIDs: [], createdAt: Int64(time(nil)))
        for data in record.ipv4Data + record.ipv6Data {
            if let poolID = newState.ipam.bindPool(subnet: data.Pool, networkID: id) {
                record.poolIDs.append(poolID)
            }
        }
        newState.networks[id] = record
        do {
            try commit(newState)
        } catch {
            await worker.stop()
            live[id] = nil
            throw error
        }
        live[id] = LiveNetwork(worker: worker, switchStatus: started.switchStatus)
        return DockerAPI.Empty()
    }

    /// Validate; the network goes from a copy of the state; the worker's part is to delete the
    /// taps of endpoints still recorded (best effort, see below); the state is written and
    /// swapped in; then the worker is stopped while the record is synced, and the reply sent
    /// once both are done. The stop comes after the write because it cannot be undone: were the
    /// write to fail, the network would still be recorded and must keep its worker. The stop
    /// itself cannot fail (it ends in SIGKILL), and a supervisor that dies between the write and
    /// the stop leaves a worker that sees EOF on its stdin and stops its children alike. The
    /// sync overlaps the stop (0.35 ms of an idle disk against the switch's 0.8 ms stop); were
    /// it to fail, the network is gone all the same, so that is logged, not replied
    /// (``syncDeferredState()``): dockerd forgets the network whatever we answer.
    func deleteNetwork(_ request: DockerAPI.NetworkRequest) async throws -> DockerAPI.Empty {
        let id = request.NetworkID
        guard live[id]?.change == nil else {
            throw VDEError.conflict("network \(id.short) is being changed by another request; retry")
        }
        guard let record = state.networks[id] else {
            throw VDEError.notFound("no vde network \(id.short) (already deleted?)")
        }
        if let adding = live[id]?.addsInFlight, adding > 0 {
            throw VDEError.conflict("network \(id.short) is getting \(adding) new endpoint(s) right now; retry")
        }
        live[id, default: LiveNetwork()].change = .deleting
        defer { live[id]?.change = nil }
        let worker = live[id]?.worker
        try await perform(
            { $0.networks[id] = nil }, durability: .syncLater,
            worker: {
                // dockerd sends DeleteNetwork only once it has no endpoint on the network left, and it
                // forgets the network whatever we answer: endpoints still recorded here are ones whose
                // DeleteEndpoint failed (their worker was down) or never came. That is Docker's
                // evidence that they are gone: their taps are deleted (best effort) and they go with
                // the network.
                guard let worker else { return }
                for endpointID in record.endpoints.keys.sorted() {
                    do {
                        try await worker.removeEndpoint(endpointID)
                    } catch {
                        logger.warning(
                            "network removed with an endpoint whose tap could not be deleted",
                            metadata: [
                                "network": "\(id.short)", "endpoint": "\(endpointID.short)",
                                "tap": "\(record.endpoints[endpointID].map { "\($0.tapName)" } ?? "?")",
                                "error": "\(VDEError(wrapping: error).message)",
                            ])
                    }
                }
            })
        live[id] = nil
        // Once the worker has answered `shutdown`, nothing of the network is left but the exiting
        // process (see ``NetworkWorker/stop(awaitExit:)``). The stop runs in a child task, off
        // this actor's queue, which meanwhile syncs the record.
        async let stopped: Void? = worker?.stop(awaitExit: false)
        syncDeferredState()
        _ = await stopped
        logger.info("network removed", metadata: ["network": "\(id.short)"])
        return DockerAPI.Empty()
    }

    /// Validate; the worker makes the tap and plugs it; the endpoint is recorded on a copy of
    /// the state as it is then, written, swapped in (with the worker's status), and the reply
    /// sent. An add that failed, timed out or could not be recorded is undone (``undoAdd``).
    func createEndpoint(_ request: DockerAPI.CreateEndpointRequest) async throws -> DockerAPI.CreateEndpointResponse {
        let networkID = request.NetworkID
        let endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        try AddressChecks.check(request, in: existingNetwork(networkID))
        guard state.network(ofEndpoint: endpointID) == nil else {
            throw VDEError.conflict("endpoint \(endpointID.short) already exists")
        }
        // Before any tap is made: a bad `--driver-opt` refuses the endpoint with nothing done.
        let network = try existingNetwork(networkID)
        let link = try EndpointLink.compute(networkDefault: network.options.link, endpointOptions: request.Options)
        if let link, !link.impairment.isEmpty { try network.switchSpec.paths.checkLinksCanBeShaped() }
        let tapName = TapName(endpoint: endpointID)
        if let other = state.endpoint(usingTap: tapName) {
            throw VDEError.conflict("tap \(tapName) is already used by endpoint \(other.id.short)")
        }
        let givenMAC = request.Interface?.MacAddress
        let mac = givenMAC ?? MACAddress(derivedFrom: endpointID)
        let endpoint = EndpointRecord(
            id: endpointID, networkID: networkID, tapName: tapName, macAddress: mac, macGenerated: givenMAC == nil,
            address: request.Interface?.Address.flatMap { $0.isEmpty ? nil : $0 },
            addressIPv6: request.Interface?.AddressIPv6.flatMap { $0.isEmpty ? nil : $0 }, link: link)

        let worker = try worker(of: networkID)
        // DeleteNetwork refuses while an add is in flight: the worker would make a tap that
        // nobody records.
        live[networkID]?.addsInFlight += 1
        defer { live[networkID]?.addsInFlight -= 1 }
        var added = false
        let status: EndpointStatus
        do {
            status = try await perform(
                { state in
                    guard state.networks[networkID] != nil else {
                        throw VDEError.notFound("network \(networkID.short) was deleted meanwhile")
                    }
                    state.networks[networkID]?.endpoints[endpointID] = endpoint
                },
                worker: {
                    let status = try await worker.addEndpoint(endpoint.spec)
                    added = true
                    return status
                })
        } catch {
            // A worker's refusal is undone as its error says; an add the state could not take, always.
            await undoAdd(endpointID, worker: worker, after: added ? nil : error)
            throw error
        }
        live[networkID]?.endpoints[endpointID] = status
        logger.info(
            "endpoint created",
            metadata: [
                "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
                "tap": "\(tapName)", "mac": "\(mac)", "link": "\(link?.summary ?? "up, none")",
            ])
        return DockerAPI.CreateEndpointResponse(
            Interface: givenMAC == nil ? DockerAPI.EndpointInterface(MacAddress: mac) : nil)
    }

    /// Validate; the endpoint goes from a copy of the state; the worker's part (plug stopped,
    /// tap deleted); the state is written and swapped in; reply. A worker error is returned:
    /// the endpoint then stays recorded (and its address taken) until a retried DeleteEndpoint
    /// succeeds or the worker finds evidence that its container is gone.
    func deleteEndpoint(_ request: DockerAPI.EndpointRequest) async throws -> DockerAPI.Empty {
        let networkID = request.NetworkID
        let endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        _ = try checkedEndpoint(networkID, endpointID)
        let worker = try worker(of: networkID)
        try await perform(
            { $0.networks[networkID]?.endpoints[endpointID] = nil },
            worker: {
                try await worker.removeEndpoint(endpointID)
            })
        live[networkID]?.endpoints[endpointID] = nil
        logger.info(
            "endpoint deleted",
            metadata: [
                "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
            ])
        return DockerAPI.Empty()
    }

    func join(_ request: DockerAPI.JoinRequest) async throws -> DockerAPI.JoinResponse {
        let networkID = request.NetworkID
        let endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        _ = try checkedEndpoint(networkID, endpointID)
        let sandbox = request.SandboxKey
        let worker = try worker(of: networkID)
        let status = try await perform(
            { state in
                guard state.networks[networkID]?.endpoints[endpointID] != nil else {
                    throw VDEError.notFound("endpoint \(endpointID.short) was deleted meanwhile")
                }
                state.networks[networkID]?.endpoints[endpointID]?.sandboxKey = sandbox
            },
            worker: {
                try await worker.join(endpointID, sandboxKey: sandbox)
            })
        let (network, endpoint) = try checkedEndpoint(networkID, endpointID)
        live[networkID]?.endpoints[endpointID] = status
        logger.info(
            "endpoint joined",
            metadata: [
                "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
                "sandbox": "\(sandbox)",
            ])
        var response = DockerAPI.JoinResponse(
            InterfaceName: DockerAPI.InterfaceName(SrcName: endpoint.tapName, DstPrefix: "eth"))
        // A route via the container's own address would make its start fail: the container
        // that holds the gateway address gets its default route from another network.
        if let gateway = network.gatewayIPv4, endpoint.address.map(NetworkRecord.stripPrefix) != gateway {
            response.Gateway = gateway
        }
        if let gateway = network.gatewayIPv6, endpoint.addressIPv6.map(NetworkRecord.stripPrefix) != gateway {
            response.GatewayIPv6 = gateway
        }
        return response
    }

    func leave(_ request: DockerAPI.EndpointRequest) async throws -> DockerAPI.Empty {
        let networkID = request.NetworkID
        let endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        _ = try checkedEndpoint(networkID, endpointID)
        let worker = try worker(of: networkID)
        let status = try await perform(
            { $0.networks[networkID]?.endpoints[endpointID]?.sandboxKey = nil },
            worker: {
                try await worker.leave(endpointID)
            })
        live[networkID]?.endpoints[endpointID] = status
        logger.info(
            "endpoint left",
            metadata: [
                "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
            ])
        return DockerAPI.Empty()
    }

    func endpointOperInfo(_ request: DockerAPI.EndpointRequest) throws -> DockerAPI.EndpointOperInfoResponse {
        let (network, endpoint) = try checkedEndpoint(request.NetworkID, request.EndpointID)
        var value: [String: String] = [
            "tap": endpoint.tapName.rawValue,
            "mac_address": endpoint.macAddress.rawValue,
            "socket_dir": network.switchSpec.paths.ctlDir,
            "switch": network.ownsSwitch ? "own" : "external",
        ]
        if let link = endpoint.link { value["link"] = LinkInfo(link).short }
        if let status = live[network.id]?.endpoints[endpoint.id] {
            value["plug_state"] = status.state.rawValue
            if let pid = status.plugPID { value["plug_pid"] = String(pid) }
            if let port = status.port { value["switch_port"] = String(port) }
        }
        return DockerAPI.EndpointOperInfoResponse(Value: value)
    }

    // MARK: helpers

    /// Endpoint calls on a network that is being created or deleted fail clearly (dockerd
    /// retries or reports it): its worker may not exist yet, or may be stopping.
    func checkNotInFlight(_ networkID: NetworkID) throws {
        guard live[networkID]?.change == nil else {
            throw VDEError.unavailable("network \(networkID.short) is being created or deleted right now; retry")
        }
    }

    /// After an add that failed, timed out or was not recorded: an idempotent removeEndpoint,
    /// queued behind the add in the worker, so that no tap or plug is left for an endpoint the
    /// state does not know. Not after a refusal that made nothing (a bad request, a name taken
    /// by an interface that is not ours). Best effort: a worker that cannot do it now deletes
    /// the tap at its next start (the tap's `creating/` marker).
    func undoAdd(_ endpointID: EndpointID, worker: NetworkWorker, after error: (any Error)?) async {
        if let error {
            let code = VDEError(wrapping: error).code
            if code == .conflict || code == .invalidArgument { return }
        }
        do {
            try await worker.removeEndpoint(endpointID)
        } catch {
            logger.warning(
                "could not undo a failed add; the worker deletes the tap at its next start",
                metadata: [
                    "endpoint": "\(endpointID.short)", "error": "\(VDEError(wrapping: error).message)",
                ])
        }
    }

    /// The switch a new network gets: its own under the run dir, or the one at `socket_dir`.
    /// The network's paths (``NetworkPaths``) are computed here, once, for every mode, and the
    /// options that shape the switch (`-o hub=true`, the MTU) flow into the spec here and only here.
    func switchSpec(for networkID: NetworkID, options: NetworkOptions) throws -> SwitchSpec {
        let paths = try NetworkPaths(runDir: configuration.runDir, network: networkID, options: options)
        let mode: SwitchMode = options.socketDir == nil ? .own : options.createSockets ? .useOrCreate : .external
        let spec = try SwitchSpec(
            paths: paths, mode: mode, group: options.socketGroup, numPorts: options.numSwitchports,
            mtu: options.effectiveMTU, hub: options.hub, uplink: options.uplink)
        try checkNoConflict(spec, of: networkID)
        return spec
    }

    /// Records the fact "the plugin started this network's switch" as a (re)started worker
    /// reports it (a `useOrCreate` network may find a switch running after a restart, or start
    /// one). The intent, `switchSpec.mode`, is never changed.
    func recordSwitchStarted(networkID: NetworkID, _ owned: Bool?) {
        guard let owned, var record = state.networks[networkID], record.switchStarted != owned else { return }
        record.switchStarted = owned
        var newState = state
        newState.networks[networkID] = record
        do {
            try commit(newState)
        } catch {
            logger.warning(
                "could not record who started the switch",
                metadata: [
                    "network": "\(networkID.short)", "error": "\(VDEError(wrapping: error).message)",
                ])
        }
    }

    /// Refuses a spec whose paths another network uses, committed or still being created (its
    /// reservation in ``LiveNetwork/change``): the same network dir, the same ctl dir when either
    /// network may start a switch there, the same management socket, or uplinks to the same
    /// segment (``UplinkURL/segment``).
    func checkNoConflict(_ spec: SwitchSpec, of networkID: NetworkID) throws {
        // Runs for every network at each create: no copies and no text unless there is a conflict.
        for (otherID, other) in state.networks where otherID != networkID {
            try Self.checkNoConflict(spec, with: other.switchSpec, whose: "network \(otherID.short)")
        }
        for (otherID, network) in live where otherID != networkID {
            guard let other = network.reservedSpec else { continue }
            try Self.checkNoConflict(spec, with: other, whose: "network \(otherID.short) (being created right now)")
        }
    }

    private static func checkNoConflict(_ spec: SwitchSpec, with other: SwitchSpec, whose: @autoclosure () -> String)
        throws
    {
        if other.paths.networkDir == spec.paths.networkDir {
            throw VDEError.conflict(
                "\(whose()) already uses \(spec.paths.networkDir): network IDs share their first 12 characters")
        }
        if other.paths.ctlDir == spec.paths.ctlDir, other.mode != .external || spec.mode != .external {
            throw VDEError.conflict(
                "socket_dir \(spec.paths.ctlDir) is the switch of \(whose()): pick another socket_dir, "
                    + "or use that switch without create_sockets")
        }
        if let management = spec.paths.managementSocket, management == other.paths.managementSocket {
            throw VDEError.conflict("management_socket \(management) is used by \(whose()): pick another path")
        }
        if let uplink = spec.uplink, let otherUplink = other.uplink, uplink.segment == otherUplink.segment {
            throw VDEError.conflict(
                "uplink \(uplink) joins the same segment (\(uplink.segment)) as the uplink \(otherUplink) of \(whose()): the two networks would be one Ethernet; give this network its own group, vni or port"
            )
        }
    }

    func existingNetwork(_ id: NetworkID) throws -> NetworkRecord {
        guard let network = state.networks[id] else {
            throw VDEError.notFound("no vde network \(id.short)")
        }
        return network
    }

    /// The network and endpoint a request names, or a clear error when either is unknown.
    func checkedEndpoint(_ networkID: NetworkID, _ endpointID: EndpointID) throws -> (
        network: NetworkRecord, endpoint: EndpointRecord
    ) {
        let network = try existingNetwork(networkID)
        guard let endpoint = network.endpoints[endpointID] else {
            throw VDEError.notFound("no endpoint \(endpointID.short) in network \(networkID.short)")
        }
        return (network, endpoint)
    }

    static func groupExists(_ name: GroupName) -> Bool {
        name.rawValue.withCString { getgrnam($0) } != nil
    }
}
