import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Supervision of the children: restarts after unexpected exits, and the tap watch.
extension Worker {
    // MARK: Switch

    /// The owned switch exited on its own: report it, drop the plugs (they exit with their
    /// switch anyway) and restart the switch at the same path.
    func switchExited(_ process: any RunningSwitch, exit: ChildExit) {
        guard switchProcess === process, !shuttingDown else { return }
        logger.warning("switch exited: \(exit)", metadata: ["pid": "\(process.pid)"])
        externalPortsLost(switchPID: process.pid, exit: exit)
        emit(.childExited(child: .switch, pid: process.pid, detail: exit.description))
        switchProcess = nil
        switchPIDFile?.remove()
        switchState = .restarting
        endSegmentCaptures(reason: "the network's switch exited (\(exit)); it is being restarted")
        dropUplinkWithSwitch()
        for (id, endpoint) in endpoints {
            guard let plug = endpoint.plug else { continue }
            endpoints[id]?.plug = nil
            endpoints[id]?.port = nil
            endpoints[id]?.state = .restarting
            pidFiles?.remove(endpointID: id)
            // Now, not in the task: the restarted switch's new plugs need the taps free.
            plug.stopWatchingTap()
            // They normally exit by themselves within milliseconds; make sure.
            Task { await plug.terminate(grace: .milliseconds(500)) }
        }
        scheduleSwitchRestart()
    }

    func scheduleSwitchRestart() {
        let delay = switchBackoff.nextDelay()
        if delay > .zero { logger.info("restarting the switch in \(delay.milliseconds) ms") }
        remember(
            Task { [weak self] in
                if delay > .zero { try? await Task.sleep(for: delay) }
                guard !Task.isCancelled else { return }
                await self?.restartSwitch()
            })
    }

    func restartSwitch() async {
        do {
            try await exclusively {
                guard switchState == .restarting, let switchFiles else { return }
                let process: any RunningSwitch
                do {
                    // Only the switch's own stale names go; the directories are claimed again
                    // (someone may have removed them meanwhile) under the same rules as at start.
                    let prepared = try switchFiles.prepare(logger: logger)
                    createdDirectories += prepared.created
                    process = try await host.switches.start(files: switchFiles, logger: logger)
                } catch {
                    logger.error("cannot restart the switch: \(error)")
                    scheduleSwitchRestart()
                    return
                }
                adopt(process)
                let waiting = endpoints.filter {
                    ($0.value.state == .restarting || $0.value.state == .unreachable) && $0.value.plug == nil
                }
                .keys.sorted()
                var reattached = 0
                for id in waiting {
                    if await replug(id) { reattached += 1 }
                }
                emit(
                    .childRestarted(
                        child: .switch, pid: process.pid,
                        detail: "re-attached \(reattached) of \(waiting.count) endpoints"))
                await uplinkAfterSwitchRestart()
            }
        } catch {
            // Only a shutdown gets here.
        }
    }

    // MARK: Plugs

    /// A plug exited on its own: report it and restart it (unless its tap is gone by then).
    func plugExited(_ plug: any RunningPlug, endpointID id: EndpointID, exit: ChildExit) async {
        // The watch's duplicate of the tun descriptor keeps the tap attached: free it first.
        plug.stopWatchingTap()
        guard !shuttingDown, let endpoint = endpoints[id], endpoint.plug === plug else { return }
        logger.warning("plug exited: \(exit)", metadata: ["endpoint": "\(id)", "pid": "\(plug.pid)"])
        emit(.childExited(child: .plug, pid: plug.pid, endpointID: id, detail: exit.description))
        endpoints[id]?.plug = nil
        endpoints[id]?.port = nil
        endpoints[id]?.state = .restarting
        pidFiles?.remove(endpointID: id)
        await releasePort(of: plug.switchPID)
        schedulePlugRestart(id)
    }

    func schedulePlugRestart(_ id: EndpointID) {
        guard let delay = endpoints[id]?.backoff.nextDelay() else { return }
        remember(
            Task { [weak self] in
                if delay > .zero { try? await Task.sleep(for: delay) }
                guard !Task.isCancelled else { return }
                await self?.restartPlug(id)
            })
    }

    func restartPlug(_ id: EndpointID) async {
        _ = try? await exclusively {
            guard let endpoint = endpoints[id], endpoint.state == .restarting || endpoint.state == .unreachable,
                endpoint.plug == nil
            else { return }
            // While the switch restarts, its restart re-attaches every endpoint.
            guard switchState == .running else { return }
            if await replug(id), let pid = endpoints[id]?.plug?.pid {
                emit(.childRestarted(child: .plug, pid: pid, endpointID: id))
            }
        }
    }

    /// Starts a new plug for an endpoint that has none, where its tap is now, and reports the
    /// outcome (`endpointState`). A tap that is gone (with evidence) is not plugged again; one
    /// the worker could not look for is `unreachable` and looked for again with backoff, as is
    /// a plug that fails. Returns true when a plug runs.
    func replug(_ id: EndpointID) async -> Bool {
        guard let endpoint = endpoints[id] else { return false }
        // A pulled cable stays pulled: no plug, and the tap is not looked for (not gone either).
        guard endpoint.spec.link?.down != true else {
            endpoints[id]?.state = .linkDown
            endpoints[id]?.detail = nil
            return false
        }
        switch await locateTap(of: endpoint.spec) {
        case .gone(let evidence):
            await endpointGone(id, evidence: evidence)
            return false
        case .unknown(let reason):
            guard endpoints[id] != nil else { return false }
            endpoints[id]?.state = .unreachable
            endpoints[id]?.detail = reason
            logger.warning(
                "cannot tell where the tap is; will look again", metadata: ["endpoint": "\(id)", "reason": "\(reason)"])
            emit(.endpointState(endpointID: id, state: .unreachable, detail: reason))
            schedulePlugRestart(id)
            return false
        case .present(let location):
            do {
                let (plug, port) = try await attachPlug(endpointID: id, at: location, link: endpoint.spec.link)
                guard endpoints[id] != nil else {
                    await plug.terminate()
                    pidFiles?.remove(endpointID: id)
                    return false
                }
                install(plug, port: port, endpointID: id)
                emit(.endpointState(endpointID: id, state: .plugged, pid: plug.pid))
                return true
            } catch {
                logger.warning("cannot start the plug: \(error); will retry", metadata: ["endpoint": "\(id)"])
                endpoints[id]?.state = .restarting
                endpoints[id]?.detail = "\(error)"
                schedulePlugRestart(id)
                return false
            }
        }
    }

    /// The endpoint's tap is gone for good: nothing runs for it any more, a tap of its name left
    /// in the host is deleted, and the supervisor is told (it forgets the endpoint).
    func endpointGone(_ id: EndpointID, evidence: String) async {
        guard let endpoint = endpoints[id] else { return }
        endpoints[id]?.state = .tapGone
        endpoints[id]?.detail = evidence
        endCaptures(of: id, reason: "the endpoint is gone: \(evidence)")
        logger.warning(
            "endpoint gone: \(evidence)", metadata: ["endpoint": "\(id)", "tap": "\(endpoint.spec.tapName)"])
        if taps.existing(name: endpoint.spec.tapName, macAddress: endpoint.spec.macAddress) == .sameTap {
            do {
                try await deleteTapInBackground(endpoint.spec.tapName)
            } catch {
                logger.warning("cannot delete the tap \(endpoint.spec.tapName): \(error)")
            }
        }
        emit(.endpointState(endpointID: id, state: .tapGone, detail: evidence))
    }

    /// For a supervisor that adopts this worker (its `start` comes again): a container removed
    /// while no supervisor was linked leaves an endpoint joined to a sandbox dockerd has since
    /// unmounted and deleted, and its plug keeps the namespace alive, so no tap watch fires
    /// (and with the tap moved back to the host, none could). Only a missing sandbox file is
    /// evidence here: a plain file where the namespace's mount should be is what a worker sees
    /// when that mount did not propagate into its mount namespace (seen under systemd in a
    /// container whose /run is private: every live sandbox looked like that), and a sandbox
    /// that cannot be checked is no evidence either (forget only on evidence).
    func dropEndpointsOfRemovedSandboxes() async {
        for id in endpoints.keys.sorted() {
            guard let endpoint = endpoints[id], endpoint.state != .tapGone, let key = endpoint.spec.sandboxKey else {
                continue
            }
            guard case .missing = host.sandboxFile(key) else { continue }
            if let plug = endpoint.plug {
                endpoints[id]?.plug = nil
                endpoints[id]?.port = nil
                pidFiles?.remove(endpointID: id)
                await plug.terminate(grace: .milliseconds(300))
                await releasePort(of: plug.switchPID)
            }
            await endpointGone(
                id, evidence: "its container's namespace \(key) is gone (removed while no supervisor was connected)")
        }
    }

    /// Keeps a restart task so that shutdown can cancel it; forgets finished ones.
    func remember(_ task: Task<Void, Never>) {
        restartTasks.removeAll { $0.isCancelled }
        restartTasks.append(task)
        if restartTasks.count > 256 { restartTasks.removeFirst(restartTasks.count - 256) }
    }

    // MARK: Tap watch

    /// Watches the tap of a plug just installed (see ``TapWatch``): the kernel says when it is
    /// gone. Where no watch can be set up, the tap is polled instead (``startTapPolling(every:)``).
    func watchTap(of id: EndpointID, plug: any RunningPlug) {
        do {
            try plug.watchTap { [weak self] in
                Task { await self?.tapVanished(id, plug: plug) }
            }
        } catch {
            logger.info(
                "cannot watch the tap (\(error)); looking at it every second instead", metadata: ["endpoint": "\(id)"])
            startTapPolling()
        }
    }

    /// Looks every `interval` at the taps of plugs that have no ``TapWatch`` (a kernel without
    /// `pidfd_getfd`, before 5.6; a plug whose tun descriptor was not found), and ends once
    /// every plugged endpoint is watched or none is left. Never runs when every watch is set up,
    /// which is the rule on this project's kernels: an idle worker is never woken by it.
    func startTapPolling(every interval: Duration = .seconds(1)) {
        guard tapPollTask == nil else { return }
        tapPollTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled, let self, await self.checkUnwatchedTaps() else { break }
            }
            await self?.tapPollingEnded()
        }
    }

    private func tapPollingEnded() { tapPollTask = nil }

    /// Checks that each plug without a watch still has its tap; a plug whose tap vanished is
    /// stopped at once. Returns false when no such plug is left to look at.
    func checkUnwatchedTaps() async -> Bool {
        guard !shuttingDown else { return false }
        var unwatched = false
        for (id, endpoint) in endpoints {
            guard endpoint.state == .plugged, let plug = endpoint.plug, !plug.isWatchingTap else { continue }
            unwatched = true
            let gone: Bool
            switch plug.tapAttachment() {
            case .attached:
                gone = false
            case .detached:
                gone = true
            case .unknown:
                // No fd info (it cannot usually happen): fall back to names and paths.
                let inHost = taps.exists(endpoint.spec.tapName)
                let inSandbox = endpoint.spec.sandboxKey.map { FileSystem.exists($0.rawValue) } ?? false
                gone = !inHost && !inSandbox && !plug.hasExited
            }
            if gone { await tapVanished(id, plug: plug) }
        }
        return unwatched
    }

    func tapVanished(_ id: EndpointID, plug: any RunningPlug) async {
        guard !shuttingDown, let endpoint = endpoints[id], endpoint.plug === plug else { return }
        endpoints[id]?.plug = nil
        endpoints[id]?.port = nil
        endpoints[id]?.state = .tapGone
        pidFiles?.remove(endpointID: id)
        await plug.terminate(grace: .milliseconds(300))
        await releasePort(of: plug.switchPID)
        logger.warning(
            "tap gone; plug stopped",
            metadata: ["endpoint": "\(id)", "tap": "\(endpoint.spec.tapName)", "pid": "\(plug.pid)"])
        emit(
            .tapGone(
                endpointID: id, pid: plug.pid,
                detail:
                    "the tap \(endpoint.spec.tapName) is gone (container removed?); \(plug.kind.program) pid \(plug.pid) stopped"
            ))
    }
}
