import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The network's uplink as the worker runs it (see ``UplinkProcess``).
struct ManagedUplink: Sendable {
    let url: UplinkURL
    let pidFile: UplinkPIDFile
    /// The running uplink; nil when none runs. Cleared before it is stopped on purpose, so that
    /// its exit is not taken for a crash.
    var process: (any RunningUplink)?
    var state = UplinkState.stopped
    var port: Int?
    var restarts = 0
    var backoff = RestartBackoff.child
    var detail: String?
    /// Bumped whenever the uplink is dropped with its switch: a restart scheduled before then
    /// does nothing.
    var generation: UInt64 = 0
}

/// Supervision of the uplink: started once the switch is up, restarted with backoff when it
/// exits, dropped with the switch and started again after it, stopped at shutdown.
///
/// After every start (not an adoption) each plugged container endpoint is announced (one
/// unsolicited ARP, ``announce(endpointID:at:)``): vxvde learns a remote MAC with the UDP port
/// it came from, and a restarted vde_plug has a new port, so the other hosts would keep sending
/// to the dead one for every MAC of ours they learnt, until that MAC sends again. VMs and other
/// external ports cannot be announced from here.
extension Worker {
    /// How long an uplink's exit waits for its switch's before it counts as a crash of its own
    /// (see ``uplinkExited(_:exit:)``): the two exits are microseconds apart, more under load.
    static let switchExitGrace = Duration.milliseconds(250)

    /// The uplink an earlier worker left, adopted or stopped as `spec` says (before the switch
    /// is brought up: a new switch means the leftover lost its own and exits by itself).
    func takeOverLeftoverUplink(_ spec: SwitchSpec) async -> (any RunningUplink)? {
        await host.uplinks.adoptLeftover(
            pidFile: UplinkPIDFile(path: spec.paths.uplinkPIDFile), ctlDir: spec.paths.ctlDir, url: spec.uplink,
            logger: logger)
    }

    /// Called by `start` once the switch runs: adopts `leftover` (when the switch is the one it
    /// was attached to), else starts the uplink; a failure is retried with backoff.
    func bringUpUplink(leftover: (any RunningUplink)?, switchAdopted: Bool) async {
        guard let spec, let url = spec.uplink else { return }
        uplink = ManagedUplink(url: url, pidFile: UplinkPIDFile(path: spec.paths.uplinkPIDFile))
        if let leftover {
            if switchAdopted || !owned {
                let ports = (try? await managementClient()?.ports()) ?? []
                installUplink(leftover, port: ports.first { $0.peerPID == leftover.pid }?.port)
                return
            }
            // A new switch: the leftover was attached to none of this network's (it exits with
            // its switch; make sure).
            await leftover.terminate(grace: .milliseconds(300))
            uplink?.pidFile.remove()
        }
        uplink?.state = .restarting
        if await launchUplink() {
            logger.info("uplink started", metadata: ["pid": "\(uplink?.process?.pid ?? 0)", "url": "\(url)"])
        }
    }

    /// Starts vde_plug, waits until the switch shows it on a port, installs it and announces
    /// the endpoints. On failure records why and schedules another attempt. True when it runs.
    func launchUplink() async -> Bool {
        guard let spec, spec.uplink != nil, let url = uplink?.url else { return false }
        let process: any RunningUplink
        do {
            process = try await host.uplinks.start(ctlDir: spec.paths.ctlDir, url: url, logger: logger)
        } catch {
            uplinkFailed("\(error)")
            return false
        }
        // Written while it attaches already: a worker that dies meanwhile leaves it findable.
        uplink?.pidFile.write(pid: process.pid, logger: logger)
        do {
            let port = try await process.waitUntilAttached(
                ctlDir: spec.paths.ctlDir, management: managementClient(), timeout: .seconds(2))
            // A shutdown meanwhile stops it; a detach leaves it running, unwatched (as a plug).
            guard uplink != nil, !shuttingDown || detached else {
                await process.terminate(grace: .milliseconds(300))
                uplink?.pidFile.remove()
                return false
            }
            installUplink(process, port: port)
            announceEndpoints()
            return true
        } catch {
            await process.terminate(grace: .milliseconds(200))
            uplink?.pidFile.remove()
            await releasePort(of: process.pid)
            uplinkFailed("\(error)")
            return false
        }
    }

    private func uplinkFailed(_ reason: String) {
        guard uplink != nil else { return }
        logger.warning("cannot start the uplink: \(reason); will retry")
        uplink?.state = .restarting
        uplink?.detail = reason
        scheduleUplinkRestart()
    }

    /// Makes `process` (started or adopted) the network's uplink and watches it.
    func installUplink(_ process: any RunningUplink, port: Int?) {
        uplink?.process = process
        uplink?.port = port
        uplink?.state = .running
        uplink?.detail = nil
        uplink?.backoff.started()
        uplink?.pidFile.write(pid: process.pid, logger: logger)
        noteOwnPlug(process.pid)
        guard !detached else {
            process.stopWatching()
            return
        }
        process.onExit { [weak self] exit in
            Task { await self?.uplinkExited(process, exit: exit) }
        }
    }

    /// The uplink exited on its own: report it and start it again (once the switch runs).
    func uplinkExited(_ process: any RunningUplink, exit: ChildExit) async {
        guard !shuttingDown, let current = uplink?.process, current === process else { return }
        // Gone with its switch (it exits when the switch does): the switch's exit, handled
        // in a moment if not yet, drops it and starts it again after the switch. The kernel
        // closes a dying switch's sockets before its pidfd reports the exit, so vde_plug can
        // exit, and be seen to, first (CI saw it once under load): a switch that exits within
        // a short wait took the uplink with it.
        if let switchProcess, await switchProcess.waitForExit(timeout: Self.switchExitGrace) { return }
        guard !shuttingDown, uplink?.process === process else { return }
        logger.warning("uplink exited: \(exit)", metadata: ["pid": "\(process.pid)"])
        emit(.childExited(child: .uplink, pid: process.pid, detail: exit.description))
        uplink?.process = nil
        uplink?.port = nil
        uplink?.state = .restarting
        uplink?.detail = exit.description
        uplink?.pidFile.remove()
        await releasePort(of: process.pid)
        // While the switch restarts, its restart starts the uplink again.
        if switchState == .running { scheduleUplinkRestart() }
    }

    func scheduleUplinkRestart() {
        guard let delay = uplink?.backoff.nextDelay(), let generation = uplink?.generation else { return }
        if delay > .zero { logger.info("restarting the uplink in \(delay.milliseconds) ms") }
        remember(
            Task { [weak self] in
                if delay > .zero { try? await Task.sleep(for: delay) }
                guard !Task.isCancelled else { return }
                await self?.restartUplink(generation: generation)
            })
    }

    func restartUplink(generation: UInt64) async {
        _ = try? await exclusively {
            guard let current = uplink, current.generation == generation, current.state == .restarting,
                current.process == nil, switchState == .running
            else { return }
            if await launchUplink(), let pid = uplink?.process?.pid {
                uplink?.restarts += 1
                emit(.childRestarted(child: .uplink, pid: pid))
            }
        }
    }

    /// The switch exited: the uplink exits with it (or is stopped here), and nothing reports
    /// that as a crash of its own; ``uplinkAfterSwitchRestart()`` starts it again.
    func dropUplinkWithSwitch() {
        guard let current = uplink else { return }
        uplink?.generation &+= 1
        uplink?.process = nil
        uplink?.port = nil
        uplink?.state = .stopped
        uplink?.detail = "the switch exited; started again once it is back"
        current.pidFile.remove()
        if let process = current.process {
            Task { await process.terminate(grace: .milliseconds(500)) }
        }
    }

    /// After the switch was restarted: the uplink again, counted as a restart.
    func uplinkAfterSwitchRestart() async {
        guard uplink != nil, uplink?.process == nil else { return }
        uplink?.state = .restarting
        if await launchUplink(), let pid = uplink?.process?.pid {
            uplink?.restarts += 1
            emit(.childRestarted(child: .uplink, pid: pid, detail: "after the switch restarted"))
        }
    }

    /// Stops the uplink and removes its pid file (shutdown).
    func stopUplink() async {
        guard let current = uplink else { return }
        uplink?.generation &+= 1
        uplink?.process = nil
        uplink?.state = .stopped
        if let process = current.process {
            await process.terminate(grace: .milliseconds(500))
            logger.info("uplink stopped", metadata: ["pid": "\(process.pid)"])
        }
        current.pidFile.remove()
    }

    /// One unsolicited ARP from every plugged endpoint inside a container, found where its
    /// interface is now (dockerd renamed it), in the background.
    func announceEndpoints() {
        let plugged = endpoints.values.filter { $0.state == .plugged && $0.spec.sandboxKey != nil }.map(\.spec)
        guard !plugged.isEmpty else { return }
        remember(
            Task { [weak self] in
                for spec in plugged {
                    guard let self, !Task.isCancelled else { return }
                    await self.announceAfterUplinkStart(spec)
                }
            })
    }

    private func announceAfterUplinkStart(_ spec: EndpointSpec) async {
        guard case .present(let location) = await locateTap(of: spec), endpoints[spec.endpointID]?.state == .plugged
        else { return }
        announce(endpointID: spec.endpointID, at: location)
    }

    /// For `status`: the uplink with the counters of its port in `ports` (nil when unknown).
    func uplinkStatus(ports: [PortCounters]?) -> UplinkStatus? {
        guard let uplink else { return nil }
        let pid = uplink.process?.pid
        let counters = pid.flatMap { pid in ports?.first { $0.peerPID == pid } }
        return UplinkStatus(
            url: uplink.url, state: uplink.state, pid: pid, counters: counters, restarts: uplink.restarts,
            detail: uplink.state == .running ? nil : uplink.detail)
    }
}
