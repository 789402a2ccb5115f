import Logging
import Shared

/// Why an endpoint request cannot be served.
struct EndpointError: ReportableError, CustomStringConvertible {
    var vdeError: VDEError
    var description: String { vdeError.message }

    static func unknown(_ id: EndpointID) -> EndpointError {
        EndpointError(vdeError: .notFound("no endpoint \(id) on this network"))
    }
}

extension Worker {
    // MARK: addEndpoint

    /// Makes the endpoint's tap (or reuses the one an earlier attempt made), checks that the switch
    /// has a free port, starts the plug and waits until the switch shows it on a port.
    func addEndpoint(_ endpoint: EndpointSpec) async throws -> EndpointStatus {
        guard let spec else { throw WorkerStateError.notStarted }
        let id = endpoint.endpointID
        if let existing = endpoints[id] {
            guard existing.spec.tapName == endpoint.tapName, existing.spec.macAddress == endpoint.macAddress else {
                throw VDEError.conflict(
                    "endpoint \(id) already exists with tap \(existing.spec.tapName) and MAC \(existing.spec.macAddress)"
                )
            }
            if existing.state == .plugged || existing.state == .restarting || existing.state == .linkDown {
                return existing.status()
            }
        }
        if let other = endpoints.values.first(where: { $0.spec.tapName == endpoint.tapName && $0.spec.endpointID != id }
        ) {
            throw VDEError.conflict(
                "the tap name \(endpoint.tapName) is already used by endpoint \(other.spec.endpointID)")
        }
        guard switchState == .running else {
            throw VDEError.unavailable("the switch of this network is being restarted; retry in a moment")
        }

        // The same endpoint removed a moment ago: its tap must be gone before one is made anew.
        await waitForTapDeletion(endpoint.tapName)
        // A worker that dies from here on, or a supervisor that never records the endpoint, leaves
        // the tap to the next worker, which deletes it unless it restores the endpoint (see
        // ``TapMarkers``).
        tapCreations?.mark(tapName: endpoint.tapName, logger: logger)
        switch taps.existing(name: endpoint.tapName, macAddress: endpoint.macAddress) {
        case .none:
            try await taps.create(name: endpoint.tapName, macAddress: endpoint.macAddress, mtu: spec.mtu)
            logger.debug("tap created", metadata: ["tap": "\(endpoint.tapName)", "mac": "\(endpoint.macAddress)"])
        case .sameTap:
            logger.info("reusing the existing tap \(endpoint.tapName)")
        case .conflicting(let reason):
            tapCreations?.unmark(tapName: endpoint.tapName)
            throw TapError.conflict(name: endpoint.tapName, reason: reason)
        }

        // A pulled cable from the start (`link ... down` on the network before the container
        // connected): the tap is made and no plug runs; `up` plugs it.
        if endpoint.link?.down == true {
            var managed = endpoints[id] ?? ManagedEndpoint(spec: endpoint, state: .linkDown)
            managed.spec.link = endpoint.link
            managed.spec.sandboxKey = endpoint.sandboxKey ?? managed.spec.sandboxKey
            managed.state = .linkDown
            endpoints[id] = managed
            return try endpointStatus(id)
        }

        let plug: any RunningPlug
        let port: Int?
        do {
            if let management = managementClient() {
                try await checkFreePort(
                    management: management, capacity: portsForClients(spec), ctlDir: spec.paths.ctlDir)
            } else {
                // Without a management socket, a probe is the only way to see a full switch: on a
                // full switch libvdeplug waits for a port that never comes.
                switch await host.switches.probe(ctlDir: spec.paths.ctlDir, timeout: .milliseconds(500)) {
                case .answers: break
                case .noReply: throw PlugError.noFreePort(ctlDir: spec.paths.ctlDir)
                case .absent(let code): throw SwitchError.notAnswering(ctlDir: spec.paths.ctlDir, errno: code)
                }
            }
            (plug, port) = try await attachPlug(
                endpointID: id, at: .host(tapName: endpoint.tapName), link: endpoint.link)
        } catch {
            do {
                try await taps.delete(name: endpoint.tapName)
                tapCreations?.unmark(tapName: endpoint.tapName)
            } catch {
                logger.warning("cannot delete the tap \(endpoint.tapName) after a failed add: \(error)")
            }
            throw error
        }
        var managed = endpoints[id] ?? ManagedEndpoint(spec: endpoint, state: .unplugged)
        managed.spec.sandboxKey = endpoint.sandboxKey ?? managed.spec.sandboxKey
        managed.spec.link = endpoint.link
        endpoints[id] = managed
        // The `creating/` marker stays: the worker cannot know whether the supervisor records
        // the endpoint. Join unmarks it (dockerd joins only endpoints whose CreateEndpoint
        // succeeded), and so does the next start that is given the endpoint to restore.
        install(plug, port: port, endpointID: id)
        return try endpointStatus(id)
    }

    /// Fails with `exhausted` when every port is in use (the uplink's is not counted: it has
    /// one of its own, ``portsForClients(_:)``). A port whose client just left is freed by the
    /// switch a moment later, so a full switch is looked at again for half a second.
    func checkFreePort(management: any SwitchManagement, capacity: Int, ctlDir: String) async throws {
        let deadline = ContinuousClock.now + .milliseconds(500)
        while true {
            let uplinkPID = uplink?.process?.pid
            let inUse = try await management.ports().filter { uplinkPID == nil || $0.peerPID != uplinkPID }
            if inUse.count < capacity { return }
            if ContinuousClock.now >= deadline {
                logger.info(
                    "switch full", metadata: ["holders": "\(inUse.map { "port \($0.port): \($0.peer ?? "?")" })"])
                throw PlugError.exhausted(ports: capacity, ctlDir: ctlDir)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: joinEndpoint, leaveEndpoint, removeEndpoint

    /// Records the container's namespace: a plug restarted later must run there.
    ///
    /// An endpoint that left earlier (a container restart: dockerd calls Leave, moves the tap back
    /// to the host namespace, then Join again) gets its plug back here, while its tap is still in
    /// the host namespace: dockerd moves it only after Join has answered.
    func joinEndpoint(_ id: EndpointID, sandboxKey key: SandboxKey) async throws -> EndpointStatus {
        guard let endpoint = endpoints[id] else { throw EndpointError.unknown(id) }
        // A capture of the tap in the host namespace cannot follow it into the container's.
        endCaptures(
            of: id, reason: "the container joined: its interface moves into the container's namespace; capture again")
        endpoints[id]?.spec.sandboxKey = key
        tapCreations?.unmark(tapName: endpoint.spec.tapName)
        logger.debug("endpoint joined", metadata: ["endpoint": "\(id)", "sandbox": "\(key)"])
        if endpoint.state == .unplugged, endpoint.plug == nil, endpoint.spec.link?.down == true {
            // Back after a leave with its cable pulled: it stays unplugged until `up`.
            endpoints[id]?.state = .linkDown
        } else if endpoint.state == .unplugged, endpoint.plug == nil {
            guard switchState == .running else {
                throw VDEError.unavailable("the switch of this network is being restarted; retry in a moment")
            }
            guard taps.existing(name: endpoint.spec.tapName, macAddress: endpoint.spec.macAddress) == .sameTap else {
                throw VDEError.notFound(
                    "the tap \(endpoint.spec.tapName) of endpoint \(id) is not in the host namespace; remove the endpoint and create it again"
                )
            }
            let (plug, port) = try await attachPlug(
                endpointID: id, at: .host(tapName: endpoint.spec.tapName), link: endpoint.spec.link)
            install(plug, port: port, endpointID: id)
        }
        return try endpointStatus(id)
    }

    /// Stops the plug; dockerd then moves the tap back to the host namespace.
    func leaveEndpoint(_ id: EndpointID) async throws -> EndpointStatus {
        guard endpoints[id] != nil else { throw EndpointError.unknown(id) }
        endCaptures(of: id, reason: "the container left the network")
        await stopPlug(of: id)
        endpoints[id]?.state = .unplugged
        endpoints[id]?.spec.sandboxKey = nil
        return try endpointStatus(id)
    }

    /// Stops the plug, forgets the endpoint and deletes its tap in the background (see
    /// ``TapMarkers``). An unknown endpoint is not an error (dockerd retries), but a tap
    /// named after it is still deleted.
    func removeEndpoint(_ id: EndpointID) async throws {
        let tapName = endpoints[id]?.spec.tapName ?? TapName(endpoint: id)
        endCaptures(of: id, reason: "the endpoint was removed")
        await stopPlug(of: id)
        pidFiles?.remove(endpointID: id)
        let usedByAnother = endpoints.values.contains { $0.spec.tapName == tapName && $0.spec.endpointID != id }
        if !usedByAnother {
            try await deleteTapInBackground(tapName)
            tapCreations?.unmark(tapName: tapName)
        }
        endpoints[id] = nil
    }

    /// The endpoint as it is now, for a reply.
    func endpointStatus(_ id: EndpointID) throws -> EndpointStatus {
        guard let endpoint = endpoints[id] else { throw EndpointError.unknown(id) }
        return endpoint.status()
    }

    /// Stops the endpoint's plug, if one runs (SIGTERM, SIGKILL after a short grace).
    func stopPlug(of id: EndpointID) async {
        guard let plug = endpoints[id]?.plug else { return }
        endpoints[id]?.plug = nil
        endpoints[id]?.port = nil
        pidFiles?.remove(endpointID: id)
        await plug.terminate(grace: .milliseconds(500))
        await releasePort(of: plug.switchPID)
        logger.info("plug stopped", metadata: ["endpoint": "\(id)", "pid": "\(plug.pid)"])
    }

    /// Makes sure the switch let go of the port of an exited plug.
    ///
    /// vde_switch 2.3.2 does not always notice that a plug exited: here, in roughly one case out of
    /// four, the port stayed `ACTIVE` with the dead plug's endpoint for good (seconds later still),
    /// so the next client found the switch full. A descriptor the switch drops while the plug
    /// connects causes that (``ManagementSession``, which took the worker's own such drops away);
    /// another client that leaves meanwhile still can. The worker waits `grace` for the switch to
    /// free the port, then drops the endpoint itself with `port/epclose PORT ID`. When the switch
    /// does notice, it frees the port within a few milliseconds of the exit; the grace only has
    /// to cover that, and it is paid by every Leave that hits the bug (Docker waits for Leave).
    func releasePort(of pid: Int32, grace: Duration = .milliseconds(40)) async {
        guard switchState == .running, let management = managementClient(timeout: .milliseconds(500)) else { return }
        let deadline = ContinuousClock.now + grace
        while true {
            guard let entries = try? await management.portEntries() else { return }
            let stale = entries.flatMap { entry in
                entry.endpoints.filter { $0.pid == pid }.map { (port: entry.counters.port, id: $0.id) }
            }
            if stale.isEmpty { return }
            if ContinuousClock.now >= deadline {
                for endpoint in stale {
                    do {
                        try await management.closeEndpoint(port: endpoint.port, id: endpoint.id)
                        logger.info(
                            "the switch kept port \(endpoint.port) of exited plug \(pid); closed its endpoint \(endpoint.id)"
                        )
                    } catch {
                        logger.warning("\(error)")
                    }
                }
                return
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    // MARK: Plugs

    /// Starts the plug `link` asks for at `location` (vde_plug2tap, or a wirefilter with the
    /// link's impairment) and waits until it holds a switch port; stops it on failure. The
    /// caller has checked that the cable is not pulled.
    func attachPlug(endpointID: EndpointID, at location: PlugLocation, link: LinkSettings?) async throws
        -> (any RunningPlug, Int?)
    {
        guard let spec else { throw WorkerStateError.notStarted }
        guard let tapName = endpoints[endpointID]?.spec.tapName ?? tapName(of: location) else {
            throw EndpointError.unknown(endpointID)
        }
        var plugLogger = logger
        plugLogger[metadataKey: "endpoint"] = .string(endpointID.rawValue)
        let wirefilter =
            PlugKind.wanted(for: link) == .wirefilter
            ? link.map { WirefilterSpec(impairment: $0.impairment, tap: tapName, paths: spec.paths) } : nil
        let plug = try await host.plugs.start(
            ctlDir: spec.paths.ctlDir, location: location, wirefilter: wirefilter, logger: plugLogger)
        // Written while it attaches already: a worker that dies (or detaches) meanwhile leaves
        // a plug that the next worker can find.
        pidFiles?.write(endpointID: endpointID, pid: plug.pid, logger: logger)
        do {
            let port = try await plug.waitUntilAttached(ctlDir: spec.paths.ctlDir, management: managementClient())
            logger.info(
                "plug started",
                metadata: [
                    "endpoint": "\(endpointID)", "pid": "\(plug.pid)", "on": "\(location)", "program": "\(plug.kind)",
                    "port": "\(port.map(String.init) ?? "?")",
                ])
            announce(endpointID: endpointID, at: location)
            return (plug, port)
        } catch {
            await plug.terminate(grace: .milliseconds(200))
            pidFiles?.remove(endpointID: endpointID)
            throw error
        }
    }

    /// Re-plugged inside a container: its neighbours may have dropped their ARP entries for it
    /// (the kernel flushes a device's neighbours when its carrier drops, as it does while no plug
    /// holds the tap), and their packets would then wait for ARP's 1 s retransmit. One
    /// unsolicited ARP from the container updates them at once. Best effort, in the background.
    func announce(endpointID: EndpointID, at location: PlugLocation) {
        guard case .sandbox(let path, let interface) = location,
            let address = endpoints[endpointID]?.spec.ipv4Address, let busybox = executables.busybox
        else { return }
        let argv = [
            executables.nsenter, "--net=\(path)", "--", busybox, "arping", "-U", "-c", "1", "-w", "1",
            "-I", interface, "--", address.rawValue,
        ]
        host.runDetached(argv)
    }

    /// Makes `plug` the endpoint's running plug and watches it.
    func install(_ plug: any RunningPlug, port: Int?, endpointID id: EndpointID) {
        endpoints[id]?.plug = plug
        endpoints[id]?.port = port
        endpoints[id]?.state = .plugged
        endpoints[id]?.detail = nil
        endpoints[id]?.backoff.started()
        // Its pid file was written when it started (``attachPlug(endpointID:at:)``), or by the
        // worker it is adopted from.
        noteOwnPlug(plug.switchPID)
        // Installed after a detach (an operation that was under way): it runs on, unwatched.
        guard !detached else {
            plug.stopWatching()
            return
        }
        plug.onExit { [weak self] exit in
            Task { await self?.plugExited(plug, endpointID: id, exit: exit) }
        }
        watchTap(of: id, plug: plug)
    }

    /// Where the endpoint's tap is now: in the host namespace under its own name, inside the
    /// container's namespace (found by MAC, since dockerd renames it), gone (with evidence), or
    /// unknown (the worker could not look). See ``TapLocator``.
    func locateTap(of endpoint: EndpointSpec) async -> TapLookup {
        await tapLocator().locate(endpoint)
    }

    func tapLocator() -> TapLocator {
        let taps = self.taps
        return TapLocator(
            hostTap: { name, mac in taps.existing(name: name, macAddress: mac) },
            sandboxFile: host.sandboxFile,
            links: host.namespaceLinks)
    }

    // MARK: Restore

    /// Records the endpoints of a (re)started network as `restarting` and restores them in the
    /// background, after `start` has replied: each outcome is reported by an `endpointState`
    /// event. Returns their statuses for the reply.
    func beginRestore(_ requested: [EndpointSpec]) -> [EndpointStatus] {
        // The specs were checked when the request was decoded.
        let ids = requested.map(\.endpointID)
        for spec in requested {
            // A pulled cable is restored pulled: no plug, nothing to look for.
            endpoints[spec.endpointID] = ManagedEndpoint(
                spec: spec, state: spec.link?.down == true ? .linkDown : .restarting)
        }
        let toPlug = requested.filter { $0.link?.down != true }.map(\.endpointID)
        if !toPlug.isEmpty {
            remember(Task { [weak self] in await self?.restoreEndpoints(toPlug) })
        }
        return ids.sorted().compactMap { endpoints[$0]?.status() }
    }

    /// How many endpoints are restored at once: enough that a large network comes back in a
    /// few seconds, few enough that 100 nsenter and plug starts do not crowd a small host.
    static let restoreWidth = 8

    /// Restores `ids` concurrently, holding the gate so that no other operation changes them
    /// meanwhile (`ping` and `status` still answer).
    func restoreEndpoints(_ ids: [EndpointID]) async {
        _ = try? await exclusively {
            await withTaskGroup(of: Void.self) { group in
                var running = 0
                for id in ids {
                    if running >= Self.restoreWidth {
                        await group.next()
                        running -= 1
                    }
                    group.addTask { await self.restoreEndpoint(id) }
                    running += 1
                }
            }
            logger.info("restore done", metadata: ["endpoints": "\(ids.count)"])
        }
    }

    /// Plugs one endpoint the supervisor knew before this worker started, if it still waits.
    func restoreEndpoint(_ id: EndpointID) async {
        guard !shuttingDown, !Task.isCancelled, let endpoint = endpoints[id], endpoint.plug == nil,
            endpoint.state == .restarting || endpoint.state == .unreachable
        else { return }
        // While the switch restarts, its restart re-attaches every endpoint.
        guard switchState == .running else { return }
        _ = await replug(id)
    }
}

extension Worker {
    /// The host tap name of a plug location (nil inside a sandbox, where the interface is renamed).
    func tapName(of location: PlugLocation) -> TapName? {
        if case .host(let tapName) = location { return tapName }
        return nil
    }
}
