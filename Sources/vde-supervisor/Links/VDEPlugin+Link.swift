import Shared

/// `vde-supervisor link`: shows and changes endpoints' links, live (issue 13).
///
/// The order: resolve the network and endpoint, compute every affected endpoint's new link
/// (and the network's new default) and check them all (an error changes nothing); write them
/// to the state atomically; then send each its `setLink` and reply. Unlike the Docker calls
/// (``perform(_:worker:)``), the record comes first: it is the truth, and a worker that is
/// restarting, or fails the change, gets the recorded link through `start`'s restore list when
/// it (re)starts; the reply says so for each endpoint concerned instead of failing.
extension VDEPlugin {
    func link(_ request: LinkRequest) async throws -> LinkReply {
        let change = try LinkChange(request)
        // One link change at a time, so that the worker gets the changes in the order they were recorded.
        await acquireLinkTurn()
        defer { releaseLinkTurn() }
        let networkID = try resolveNetwork(request.network)
        try checkNotInFlight(networkID)
        let network = try existingNetwork(networkID)
        let endpointIDs: [EndpointID]
        if let given = request.endpoint {
            endpointIDs = [try resolveEndpoint(given, in: network)]
        } else {
            endpointIDs = network.endpoints.keys.sorted()
        }
        if change.action == .show {
            return await linkReply(
                networkID, endpointIDs, changed: false, notes: [:], statuses: currentStatuses(networkID))
        }
        let networkWide = request.endpoint == nil && (change.action == .set || change.action == .clear)
        if networkWide, let adding = live[networkID]?.addsInFlight, adding > 0 {
            throw VDEError.conflict(
                "network \(networkID.short) is getting \(adding) new endpoint(s) right now; retry the change of its default link"
            )
        }

        // Every new link first: nothing changes unless all of them are valid.
        var next = state
        for endpointID in endpointIDs {
            let current = network.endpoints[endpointID]?.link
            do {
                next.networks[networkID]?.endpoints[endpointID]?.link = try change.applied(to: current)
            } catch {
                throw VDEError.invalid("endpoint \(endpointID.short): \(error.message)")
            }
        }
        if networkWide {
            do {
                next.networks[networkID]?.options.link = try change.appliedToDefault(network.options.link)
            } catch {
                throw VDEError.invalid("network \(networkID.short)'s default link: \(error.message)")
            }
        }
        let shaped = endpointIDs.contains { next.networks[networkID]?.endpoints[$0]?.link?.impairment.isEmpty == false }
        if shaped || (networkWide && next.networks[networkID]?.options.link != nil) {
            try network.switchSpec.paths.checkLinksCanBeShaped()
        }
        let changed = next != state
        try commit(next)
        logger.info(
            "link changed",
            metadata: [
                "network": "\(networkID.short)", "endpoints": "\(endpointIDs.map(\.short).joined(separator: ","))",
                "action": "\(change.action.rawValue)",
            ])

        // Then the worker: each endpoint its recorded link.
        var notes: [EndpointID: (String, Bool)] = [:]
        var statuses = currentStatuses(networkID)
        guard let worker = live[networkID]?.worker else {
            for id in endpointIDs {
                notes[id] = ("recorded; the network has no worker now: its next start applies it", false)
            }
            return await linkReply(networkID, endpointIDs, changed: changed, notes: notes, statuses: statuses)
        }
        for endpointID in endpointIDs {
            guard let record = state.networks[networkID]?.endpoints[endpointID] else {
                notes[endpointID] = ("the endpoint was deleted meanwhile", false)
                continue
            }
            let phase = await worker.phase
            guard phase == .running else {
                notes[endpointID] = (
                    "recorded; the worker is \(phase.rawValue): the recorded link is applied when it is back", false
                )
                continue
            }
            do {
                let status = try await worker.setLink(endpointID, link: record.link ?? LinkSettings())
                statuses[endpointID] = status
                live[networkID]?.endpoints[endpointID] = status
            } catch {
                notes[endpointID] = (
                    "recorded, but the worker could not apply it (\(VDEError(wrapping: error).message)); "
                        + "its next start applies the recorded link", true
                )
            }
        }
        return await linkReply(networkID, endpointIDs, changed: changed, notes: notes, statuses: statuses)
    }

    /// Sends each endpoint its recorded link: for a worker that started with an assignment read
    /// before a `link` change was recorded (the change found it restarting and left it to the
    /// restart). In turn with the `link` requests, so the order of changes holds.
    func resendChangedLinks(_ endpointIDs: [EndpointID], of networkID: NetworkID) async {
        await acquireLinkTurn()
        defer { releaseLinkTurn() }
        guard let worker = live[networkID]?.worker else { return }
        for endpointID in endpointIDs {
            guard let record = state.networks[networkID]?.endpoints[endpointID] else { continue }
            do {
                let status = try await worker.setLink(endpointID, link: record.link ?? LinkSettings())
                live[networkID]?.endpoints[endpointID] = status
                logger.info(
                    "sent a link recorded during the worker's restart",
                    metadata: ["network": "\(networkID.short)", "endpoint": "\(endpointID.short)"])
            } catch {
                logger.warning(
                    "could not send a link recorded during the worker's restart; its next start applies it",
                    metadata: [
                        "network": "\(networkID.short)", "endpoint": "\(endpointID.short)",
                        "error": "\(VDEError(wrapping: error).message)",
                    ])
            }
        }
    }

    private func acquireLinkTurn() async {
        if !linkChanges.tryAcquire() { await withCheckedContinuation { linkChanges.enqueue($0) } }
    }

    private func releaseLinkTurn() { linkChanges.release() }

    private func currentStatuses(_ networkID: NetworkID) -> [EndpointID: EndpointStatus] {
        live[networkID]?.endpoints ?? [:]
    }

    private func linkReply(
        _ networkID: NetworkID, _ endpointIDs: [EndpointID], changed: Bool, notes: [EndpointID: (String, Bool)],
        statuses: [EndpointID: EndpointStatus]
    ) async -> LinkReply {
        let network = state.networks[networkID]
        let endpoints = endpointIDs.compactMap { id -> LinkReply.Endpoint? in
            guard let record = network?.endpoints[id] else { return nil }
            return LinkReply.Endpoint(
                id: id.rawValue, shortID: id.short, tap: record.tapName.rawValue,
                link: LinkInfo(record.link ?? LinkSettings()), state: statuses[id]?.state.rawValue ?? "unknown",
                note: notes[id]?.0, failed: notes[id]?.1 == true ? true : nil)
        }
        return LinkReply(
            network: networkID.rawValue, shortNetwork: networkID.short,
            networkDefault: network?.options.link.map { LinkInfo(LinkSettings(impairment: $0)) },
            endpoints: endpoints, changed: changed)
    }

    /// A network by full ID or a prefix that only one vde network's ID starts with.
    func resolveNetwork(_ given: String) throws -> NetworkID {
        let matches = Self.matching(given, in: Array(state.networks.keys))
        guard matches.count <= 1 else {
            throw VDEError.invalid(
                "'\(UntrustedText(given))' starts the IDs of \(matches.count) vde networks "
                    + "(\(matches.map(\.short).sorted().joined(separator: ", "))); give more of the ID")
        }
        guard let id = matches.first else {
            throw VDEError.notFound("no vde network with an ID starting with '\(UntrustedText(given))'")
        }
        return id
    }

    /// An endpoint of `network` by full ID or a prefix that only one of its endpoints' IDs starts with.
    func resolveEndpoint(_ given: String, in network: NetworkRecord) throws -> EndpointID {
        let matches = Self.matching(given, in: Array(network.endpoints.keys))
        guard matches.count <= 1 else {
            throw VDEError.invalid(
                "'\(UntrustedText(given))' starts the IDs of \(matches.count) endpoints of network \(network.id.short) "
                    + "(\(matches.map(\.short).sorted().joined(separator: ", "))); give more of the ID")
        }
        guard let id = matches.first else {
            throw VDEError.notFound(
                "network \(network.id.short) has no endpoint with an ID starting with '\(UntrustedText(given))'")
        }
        return id
    }

    /// The IDs equal to `given`, else those starting with it; none for an empty `given`.
    static func matching<ID: CheckedString>(_ given: String, in ids: [ID]) -> [ID] {
        guard !given.isEmpty else { return [] }
        if let exact = ids.first(where: { $0.rawValue == given }) { return [exact] }
        return ids.filter { $0.rawValue.hasPrefix(given) }
    }
}
