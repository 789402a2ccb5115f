import Glibc
import Shared

/// The NetworkDriver calls. Field names and call order: docs/ and docker-plugin-protocol.md.
extension VDEPlugin {
    func createNetwork(_ request: DockerAPI.CreateNetworkRequest) async throws -> DockerAPI.Empty {
        let id = request.NetworkID
        try AddressChecks.check(request)
        guard state.networks[id] == nil, !networksInFlight.contains(id) else {
            throw VDEError.conflict("network \(id.short) already exists")
        }
        let options = try NetworkOptions.parse(request.genericOptions, groupExists: Self.groupExists)
        let spec = try switchSpec(for: id, options: options)

        networksInFlight.insert(id)
        // Reserved until committed (or failed): a concurrent create with the same paths is refused.
        switchesInFlight[id] = spec
        defer {
            networksInFlight.remove(id)
            switchesInFlight[id] = nil
        }
        let worker = makeWorker(networkID: id)
        let result = try await worker.start(NetworkWorker.Assignment(switchSpec: spec, endpoints: []))

        var newState = state
        // The spec keeps the user's intent; whether the plugin started the switch is recorded apart.
        var record = NetworkRecord(
            id: id, options: options, switchSpec: spec, switchStarted: result.switch?.owned ?? false,
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
            throw error
        }
        workers[id] = worker
        if let status = result.switch { switchStatus[id] = status }
        return DockerAPI.Empty()
    }

    func deleteNetwork(_ request: DockerAPI.NetworkRequest) async throws -> DockerAPI.Empty {
        let id = request.NetworkID
        guard !networksInFlight.contains(id) else {
            throw VDEError.conflict("network \(id.short) is being changed by another request; retry")
        }
        guard let record = state.networks[id] else {
            throw VDEError.notFound("no vde network \(id.short) (already deleted?)")
        }
        if let adding = endpointsInFlight[id], adding > 0 {
            throw VDEError.conflict("network \(id.short) is getting \(adding) new endpoint(s) right now; retry")
        }
        networksInFlight.insert(id)
        defer { networksInFlight.remove(id) }
        // dockerd sends DeleteNetwork only once it has no endpoint on the network left, and it
        // forgets the network whatever we answer: endpoints still recorded here are ones whose
        // DeleteEndpoint failed (their worker was down) or never came. That is Docker's evidence
        // that they are gone: their taps are deleted (best effort) and they go with the network.
        if !record.endpoints.isEmpty, let worker = workers[id] {
            for endpointID in record.endpoints.keys.sorted() {
                do {
                    _ = try await worker.request(WorkerRequest(id: 0, op: .removeEndpoint, endpointID: endpointID.rawValue))
                } catch {
                    logger.warning("network removed with an endpoint whose tap could not be deleted", metadata: [
                        "network": "\(id.short)", "endpoint": "\(endpointID.short)",
                        "tap": "\(record.endpoints[endpointID].map { "\($0.tapName)" } ?? "?")",
                        "error": "\(VDEError(wrapping: error).message)",
                    ])
                }
            }
        }
        var newState = state
        newState.networks[id] = nil
        try commit(newState)
        for endpointID in record.endpoints.keys { endpointStatus[endpointID] = nil }
        if let worker = workers[id] {
            await worker.stop()
            workers[id] = nil
        }
        switchStatus[id] = nil
        logger.info("network removed", metadata: ["network": "\(id.short)"])
        return DockerAPI.Empty()
    }

    func createEndpoint(_ request: DockerAPI.CreateEndpointRequest) async throws -> DockerAPI.CreateEndpointResponse {
        let networkID = request.NetworkID, endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        try AddressChecks.check(request, in: existingNetwork(networkID))
        guard state.network(ofEndpoint: endpointID) == nil else {
            throw VDEError.conflict("endpoint \(endpointID.short) already exists")
        }
        let tapName = TapName(endpoint: endpointID)
        if let other = state.endpoint(usingTap: tapName) {
            throw VDEError.conflict("tap \(tapName) is already used by endpoint \(other.id.short)")
        }
        let givenMAC = request.Interface?.MacAddress
        let mac = givenMAC ?? MACAddress(derivedFrom: endpointID)
        let endpoint = EndpointRecord(
            id: endpointID, networkID: networkID, tapName: tapName, macAddress: mac, macGenerated: givenMAC == nil,
            address: request.Interface?.Address.flatMap { $0.isEmpty ? nil : $0 },
            addressIPv6: request.Interface?.AddressIPv6.flatMap { $0.isEmpty ? nil : $0 })

        let worker = try worker(of: networkID)
        // DeleteNetwork refuses while an add is in flight: the worker would make a tap that
        // nobody records.
        endpointsInFlight[networkID, default: 0] += 1
        defer {
            endpointsInFlight[networkID, default: 1] -= 1
            if endpointsInFlight[networkID] == 0 { endpointsInFlight[networkID] = nil }
        }
        let result: WorkerResult
        do {
            result = try await worker.request(WorkerRequest(id: 0, op: .addEndpoint, endpoint: endpoint.spec))
        } catch {
            await undoAdd(endpointID, worker: worker, after: error)
            throw error
        }
        var newState = state
        guard newState.networks[networkID] != nil else {
            await undoAdd(endpointID, worker: worker, after: nil)
            throw VDEError.notFound("network \(networkID.short) was deleted meanwhile")
        }
        newState.networks[networkID]?.endpoints[endpointID] = endpoint
        do {
            try commit(newState)
        } catch {
            await undoAdd(endpointID, worker: worker, after: nil)
            throw error
        }
        if let status = result.endpoint { endpointStatus[endpointID] = status }
        logger.info("endpoint created", metadata: [
            "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
            "tap": "\(tapName)", "mac": "\(mac)",
        ])
        return DockerAPI.CreateEndpointResponse(
            Interface: givenMAC == nil ? DockerAPI.EndpointInterface(MacAddress: mac) : nil)
    }

    /// The worker first (plug stopped, tap deleted), then the state, then the reply. A worker
    /// error is returned: the endpoint then stays recorded (and its address taken) until a
    /// retried DeleteEndpoint succeeds or the worker finds evidence that its container is gone.
    func deleteEndpoint(_ request: DockerAPI.EndpointRequest) async throws -> DockerAPI.Empty {
        let networkID = request.NetworkID, endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        _ = try checkedEndpoint(networkID, endpointID)
        _ = try await worker(of: networkID).request(WorkerRequest(id: 0, op: .removeEndpoint, endpointID: endpointID.rawValue))
        var newState = state
        newState.networks[networkID]?.endpoints[endpointID] = nil
        try commit(newState)
        endpointStatus[endpointID] = nil
        logger.info("endpoint deleted", metadata: [
            "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
        ])
        return DockerAPI.Empty()
    }

    func join(_ request: DockerAPI.JoinRequest) async throws -> DockerAPI.JoinResponse {
        let networkID = request.NetworkID, endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        _ = try checkedEndpoint(networkID, endpointID)
        let sandbox = request.SandboxKey
        _ = try await worker(of: networkID).request(
            WorkerRequest(id: 0, op: .joinEndpoint, endpointID: endpointID.rawValue, sandboxKey: sandbox.rawValue))
        var newState = state
        guard let network = newState.networks[networkID], var endpoint = network.endpoints[endpointID] else {
            throw VDEError.notFound("endpoint \(endpointID.short) was deleted meanwhile")
        }
        endpoint.sandboxKey = sandbox
        newState.networks[networkID]?.endpoints[endpointID] = endpoint
        try commit(newState)
        logger.info("endpoint joined", metadata: [
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
        let networkID = request.NetworkID, endpointID = request.EndpointID
        try checkNotInFlight(networkID)
        _ = try checkedEndpoint(networkID, endpointID)
        _ = try await worker(of: networkID).request(WorkerRequest(id: 0, op: .leaveEndpoint, endpointID: endpointID.rawValue))
        var newState = state
        newState.networks[networkID]?.endpoints[endpointID]?.sandboxKey = nil
        try commit(newState)
        endpointStatus[endpointID]?.state = .unplugged
        logger.info("endpoint left", metadata: [
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
        if let status = endpointStatus[endpoint.id] {
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
        guard !networksInFlight.contains(networkID) else {
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
            _ = try await worker.request(WorkerRequest(id: 0, op: .removeEndpoint, endpointID: endpointID.rawValue))
        } catch {
            logger.warning("could not undo a failed add; the worker deletes the tap at its next start", metadata: [
                "endpoint": "\(endpointID.short)", "error": "\(VDEError(wrapping: error).message)",
            ])
        }
    }

    /// The switch a new network gets: its own under the run dir, or the one at `socket_dir`.
    /// The network's paths (``NetworkPaths``) are computed here, once, for every mode.
    func switchSpec(for networkID: NetworkID, options: NetworkOptions) throws -> SwitchSpec {
        let paths = try NetworkPaths(runDir: configuration.runDir, network: networkID, options: options)
        let mode: SwitchMode = options.socketDir == nil ? .own : options.createSockets ? .useOrCreate : .external
        let spec = try SwitchSpec(paths: paths, mode: mode, group: options.socketGroup, numPorts: options.numSwitchports)
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
            logger.warning("could not record who started the switch", metadata: [
                "network": "\(networkID.short)", "error": "\(VDEError(wrapping: error).message)",
            ])
        }
    }

    /// Refuses a spec whose paths another network uses, committed or still being created (its
    /// reservation in ``switchesInFlight``): the same network dir, the same ctl dir when either
    /// network may start a switch there, or the same management socket.
    func checkNoConflict(_ spec: SwitchSpec, of networkID: NetworkID) throws {
        let committed = state.networks.values.map { ($0.id, $0.switchSpec, false) }
        let creating = switchesInFlight.map { ($0.key, $0.value, true) }
        for (otherID, other, inFlight) in committed + creating where otherID != networkID {
            let whose = "network \(otherID.short)" + (inFlight ? " (being created right now)" : "")
            if other.paths.networkDir == spec.paths.networkDir {
                throw VDEError.conflict("\(whose) already uses \(spec.paths.networkDir): network IDs share their first 12 characters")
            }
            if other.paths.ctlDir == spec.paths.ctlDir, other.mode != .external || spec.mode != .external {
                throw VDEError.conflict("socket_dir \(spec.paths.ctlDir) is the switch of \(whose): pick another socket_dir, "
                    + "or use that switch without create_sockets")
            }
            if let management = spec.paths.managementSocket, management == other.paths.managementSocket {
                throw VDEError.conflict("management_socket \(management) is used by \(whose): pick another path")
            }
        }
    }

    func existingNetwork(_ id: NetworkID) throws -> NetworkRecord {
        guard let network = state.networks[id] else {
            throw VDEError.notFound("no vde network \(id.short)")
        }
        return network
    }

    /// The network and endpoint a request names, or a clear error when either is unknown.
    func checkedEndpoint(_ networkID: NetworkID, _ endpointID: EndpointID) throws -> (network: NetworkRecord, endpoint: EndpointRecord) {
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
