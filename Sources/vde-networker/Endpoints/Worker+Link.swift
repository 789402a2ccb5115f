import Shared

extension Worker {
    /// Gives the endpoint `link` (see ``WorkerCommand/setLink(endpointID:link:)``) and records it
    /// in its spec, which restarts, re-plugs and the reply then follow:
    /// - impaired to impaired (other values): the running wirefilter gets them through its
    ///   management socket; the tap stays plugged, no carrier flap;
    /// - unimpaired to impaired and back: the plug is replaced on the same tap (the old one is
    ///   stopped, the new kind started where the tap is now); the container's interface stays;
    /// - `down`: the plug is stopped, state `linkDown` (a tap with no process on it shows
    ///   NO-CARRIER in the container); `up`: the plug the link asks for starts again.
    ///
    /// An endpoint without a running plug (left, restarting, unreachable) only records it: its
    /// next plug is of the right kind. Bad values are refused before anything changes.
    func setLink(_ id: EndpointID, link requested: LinkSettings) async throws -> EndpointStatus {
        guard let endpoint = endpoints[id] else { throw EndpointError.unknown(id) }
        try requested.impairment.check()
        let link: LinkSettings? = requested.isDefault ? nil : requested
        let previous = endpoint.spec.link
        endpoints[id]?.spec.link = link
        let wanted = PlugKind.wanted(for: link)
        switch endpoint.state {
        case .tapGone:
            break
        case .unplugged:
            // Left (no container): join plugs it with the right kind, or leaves it down.
            break
        case .restarting, .unreachable:
            if wanted == nil {
                endpoints[id]?.state = .linkDown
                endpoints[id]?.detail = nil
            }
        case .linkDown:
            guard wanted != nil else { break }
            guard switchState == .running else {
                // The switch's restart plugs every endpoint that waits.
                endpoints[id]?.state = .restarting
                break
            }
            endpoints[id]?.state = .restarting
            if await replug(id), let pid = endpoints[id]?.plug?.pid {
                logger.info("link up", metadata: ["endpoint": "\(id)", "pid": "\(pid)"])
            }
        case .plugged:
            guard let plug = endpoint.plug else { break }
            guard let wanted else {
                await stopPlug(of: id)
                endpoints[id]?.state = .linkDown
                endpoints[id]?.detail = nil
                logger.info("link down: plug stopped", metadata: ["endpoint": "\(id)", "pid": "\(plug.pid)"])
                break
            }
            if wanted == plug.kind {
                guard wanted == .wirefilter, let impairment = link?.impairment, previous != link else { break }
                do {
                    try await plug.apply(impairment)
                    logger.info(
                        "link changed live", metadata: ["endpoint": "\(id)", "link": "\(impairment.summary)"])
                    break
                } catch {
                    logger.warning(
                        "cannot change the wirefilter live (\(error)); replacing it", metadata: ["endpoint": "\(id)"])
                }
            }
            await replacePlug(of: id, with: wanted)
        }
        return try endpointStatus(id)
    }

    /// Stops the endpoint's plug and starts one of `kind` on the same tap; on failure the
    /// endpoint is `restarting` and retried with backoff (see ``replug(_:)``).
    ///
    /// The gap is kept short: the tap is located while the old plug still carries traffic
    /// (entering a container's namespace to list its links takes a fork and exec), and the
    /// switch is checked for the old plug's stale port only once the new plug is attached.
    private func replacePlug(of id: EndpointID, with kind: PlugKind) async {
        guard let endpoint = endpoints[id], let old = endpoint.plug else { return }
        let started = ContinuousClock.now
        let located = await locateTap(of: endpoint.spec)
        guard endpoints[id]?.plug === old else { return }
        endpoints[id]?.plug = nil
        endpoints[id]?.port = nil
        endpoints[id]?.state = .restarting
        pidFiles?.remove(endpointID: id)
        await old.terminate(grace: .milliseconds(500))
        let stopped = ContinuousClock.now
        var plugged = false
        if case .present(let location) = located {
            do {
                let (plug, port) = try await attachPlug(endpointID: id, at: location, link: endpoints[id]?.spec.link)
                install(plug, port: port, endpointID: id)
                emit(.endpointState(endpointID: id, state: .plugged, pid: plug.pid))
                plugged = true
            } catch {
                logger.warning("cannot start the plug: \(error); will retry", metadata: ["endpoint": "\(id)"])
                endpoints[id]?.detail = "\(error)"
                schedulePlugRestart(id)
            }
        } else {
            // Gone or not found: the usual path decides (and reports) what to do.
            plugged = await replug(id)
        }
        let attached = ContinuousClock.now
        await releasePort(of: old.switchPID)
        logger.info(
            "plug replaced",
            metadata: [
                "endpoint": "\(id)", "program": "\(kind)", "plugged": "\(plugged)",
                "gap_ms": "\((attached - stopped).milliseconds)", "ms": "\((attached - started).milliseconds)",
            ])
    }

    /// At shutdown, once every plug is stopped: what wirefilters left in the links dir (their
    /// sockets and pid files, which they remove themselves unless killed), then the directory
    /// if empty. Only those names, only there.
    func removeLinkFiles() {
        guard let directory = spec?.paths.linksDir, let names = FileSystem.listDirectory(directory) else { return }
        for name in names where name.hasSuffix(".mgmt") || name.hasSuffix(".pid") {
            let path = directory + "/" + name
            let isSocket = name.hasSuffix(".mgmt")
            PlugProcess.removeFiles(managementSocket: isSocket ? path : "", pidFile: isSocket ? "" : path)
        }
        FileSystem.removeIfEmpty(directory)
    }
}
