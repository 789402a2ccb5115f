import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The switch's external ports (VMs, plugs started by hand): who is on them, and who was cut off
/// when the switch died. The worker learns of ports coming and going from the switch itself
/// (``PortEventWatch``: `debug/add` on one management connection kept open), so it never polls
/// and still knows, when the switch dies and can no longer be asked, which clients were on it.
extension Worker {
    /// The pids of this worker's plugs and uplink, running or installed on the current switch
    /// and since exited, and its own (``processID``): ports with one of them are not external.
    var plugPIDs: Set<Int32> {
        externalPorts.ownPIDs.union(runningChildPIDs).union([processID])
    }

    /// The pid the switch shows for the worker's own connections: a libvdeplug probe (of a
    /// switch the worker did not start, or of one without a management socket) holds a port
    /// while it waits. Such a port is neither external nor an "other" port. Read each time, not
    /// kept: a forked worker's is not the fork server's.
    var processID: Int32 { getpid() }

    /// The pids the switch shows for the plugs and the uplink that run now.
    private var runningChildPIDs: Set<Int32> {
        Set(endpoints.values.compactMap { $0.plug?.switchPID } + [uplink?.process?.pid].compactMap { $0 })
    }

    /// Called for each plug the worker installs, with the pid the switch shows for it
    /// (``RunningPlug/switchPID``).
    func noteOwnPlug(_ pid: Int32) {
        externalPorts.ownPIDs.insert(pid)
    }

    /// Forgets exited plugs whose ports the switch no longer lists (their pids may be reused).
    private func pruneOwnPIDs() {
        let listed = Set(
            externalPorts.book.ports.values.flatMap { $0.endpoints.values.compactMap { $0 } }.compactMap(
                PortReport.processID(in:)))
        let running = runningChildPIDs
        externalPorts.ownPIDs = externalPorts.ownPIDs.filter { listed.contains($0) || running.contains($0) }
    }

    /// Follows the ports of the switch that just came up (called whenever a switch becomes the
    /// network's): forgets what was known of an earlier switch, subscribes, then asks once.
    func watchExternalPorts() {
        externalPorts.watch?.cancel()
        externalPorts.watch = nil
        externalPorts.book = PortBook()
        externalPorts.generation &+= 1
        guard let path = spec?.paths.managementSocket(switchStartedByPlugin: owned) else { return }
        let generation = externalPorts.generation
        remember(
            Task { [weak self] in
                let opened = await Blocking.run { PortEventWatch.open(path: path, timeout: .seconds(1)) }
                await self?.portWatchOpened(opened, generation: generation)
            })
    }

    private func portWatchOpened(_ opened: Result<PortEventWatch, ManagementError>, generation: UInt64) async {
        let watch: PortEventWatch
        switch opened {
        case .success(let opened): watch = opened
        case .failure(let error):
            logger.info("not following the switch's ports (\(error)); external ports are read when status asks")
            return
        }
        guard generation == externalPorts.generation, !shuttingDown else {
            watch.cancel()
            return
        }
        // One stream keeps the events in the switch's order on their way into the actor.
        let (stream, continuation) = AsyncStream.makeStream(of: [PortEvent].self)
        do {
            try watch.start(
                onEvents: { continuation.yield($0) },
                onEnd: { continuation.finish() })
        } catch {
            watch.cancel()
            logger.info("not following the switch's ports (\(error)); external ports are read when status asks")
            return
        }
        externalPorts.watch = watch
        remember(
            Task { [weak self] in
                for await events in stream {
                    await self?.applyPortEvents(events, generation: generation)
                }
                await self?.portWatchEnded(watch, generation: generation)
            })
        // Subscribed first, then asked: no port that came meanwhile is missed.
        await refreshExternalPorts()
    }

    private func applyPortEvents(_ events: [PortEvent], generation: UInt64) {
        guard generation == externalPorts.generation else { return }
        for event in events { externalPorts.book.apply(event) }
    }

    /// The switch closed the connection (it is going away): what is known stays for
    /// ``externalPortsLost(switchPID:exit:)``.
    private func portWatchEnded(_ watch: PortEventWatch, generation: UInt64) {
        guard generation == externalPorts.generation, externalPorts.watch === watch else { return }
        externalPorts.watch = nil
    }

    /// Asks the switch for its ports and MAC table and takes the answer as the truth.
    func refreshExternalPorts() async {
        guard let management = managementClient(timeout: .milliseconds(800)) else { return }
        let generation = externalPorts.generation
        do {
            let entries = try await management.portEntries()
            let macs = try? await management.macTable()
            guard generation == externalPorts.generation else { return }
            externalPorts.book.replace(entries: entries, macTable: macs)
            pruneOwnPIDs()
        } catch {
            logger.debug("cannot read the switch's ports: \(error)")
        }
    }

    /// For `status`: takes `entries` and `macs` just read from the switch (nil when it did not
    /// answer) and returns the external ports with their counters (nil when unknown).
    func externalPortsForStatus(entries: [PortEntry]?, macs: [MACTableEntry]?) -> [ExternalPort]? {
        guard let entries else { return nil }
        externalPorts.book.replace(entries: entries, macTable: macs)
        pruneOwnPIDs()
        let counters = Dictionary(
            entries.filter(\.active).map { ($0.counters.port, $0.counters) }, uniquingKeysWith: { a, _ in a })
        return externalPorts.book.externalPorts(ourPIDs: plugPIDs, counters: counters)
    }

    /// The switch died: its external ports' clients are cut off for good (a VM's `-netdev vde`
    /// does not reconnect). Logged, one line per port, and kept for `status`. Call it before
    /// the plugs are dropped (their pids tell which ports were ours).
    func externalPortsLost(switchPID: Int32, exit: ChildExit) {
        let ports = externalPorts.book.externalPorts(ourPIDs: plugPIDs)
        externalPorts.watch?.cancel()
        externalPorts.watch = nil
        externalPorts.book = PortBook()
        externalPorts.ownPIDs = []
        externalPorts.generation &+= 1
        guard !ports.isEmpty else { return }
        for port in ports {
            logger.warning(
                "external port lost with the switch: \(port.program ?? "unknown program") pid \(port.pid.map(String.init) ?? "?") on port \(port.port) must reconnect (restart the VM or plug)",
                metadata: [
                    "switchPID": "\(switchPID)", "port": "\(port.port)", "program": "\(port.program ?? "-")",
                    "pid": "\(port.pid.map(String.init) ?? "-")", "macs": "\(port.macAddresses.joined(separator: ","))",
                ])
        }
        externalPorts.lost.append(
            LostExternalPorts(switchPID: switchPID, detail: exit.description, at: Int64(time(nil)), ports: ports))
        if externalPorts.lost.count > ExternalPortsState.lostKept {
            externalPorts.lost.removeFirst(externalPorts.lost.count - ExternalPortsState.lostKept)
        }
    }

    /// What `status` reports of lost ports: nil when none was lost.
    var lostExternalPortsForStatus: [LostExternalPorts]? {
        externalPorts.lost.isEmpty ? nil : externalPorts.lost
    }
}

extension SwitchManagement {
    /// Fakes have no MAC table.
    func macTable() async throws(ManagementError) -> [MACTableEntry] { [] }
}
