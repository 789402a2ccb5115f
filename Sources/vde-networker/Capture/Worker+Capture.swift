import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Captures (`vde-supervisor capture`): the worker sets each one up and ends it; the frames
/// themselves flow on the ``CaptureEngine``'s thread, never through this actor.
extension Worker {
    /// Sets up `capture` and returns the socket its command connects to (within
    /// ``WorkerProtocol/captureConnectTimeoutSeconds``). Nothing is left when it fails.
    func startCapture(_ capture: CaptureSpec) async throws -> String {
        guard let spec, switchState != .notStarted else { throw WorkerStateError.notStarted }
        let engine = captureEngineForUse()
        guard !engine.contains(capture.id) else { throw CaptureError.duplicate(capture.id) }
        var source: (any FrameSource)?
        var segment: (plugin: CapturePlugin, path: String)?
        if let endpointID = capture.endpointID {
            guard let endpoint = endpoints[endpointID] else { throw EndpointError.unknown(endpointID) }
            source = try await host.openFrameSource(endpoint.spec.sandboxKey?.rawValue, endpoint.spec.macAddress)
        } else {
            guard owned else { throw CaptureError.segmentNeedsOwnedSwitch(ctlDir: spec.paths.ctlDir) }
            guard let management = managementClient(timeout: .seconds(2)) else {
                throw CaptureError.segmentNeedsManagementSocket(ctlDir: spec.paths.ctlDir)
            }
            guard switchState == .running else { throw CaptureError.switchNotRunning() }
            segment = (CapturePlugin(management: management), try host.capturePluginPath())
        }
        do {
            createdDirectories += try FileSystem.makeDirectories(spec.paths.capturesDir, mode: 0o700)
        } catch {
            source?.close()
            throw CaptureError.system("cannot make the capture directory", error)
        }
        let socketPath = spec.paths.captureSocket(capture.id)
        let startedAt = Int64(CaptureEngine.nowNanoseconds() / 1_000_000)
        guard let segment else {
            try engine.add(capture, socketPath: socketPath, source: source, startedAt: startedAt)
            logger.info("endpoint capture set up", metadata: ["capture": "\(capture.id)", "socket": "\(socketPath)"])
            return socketPath
        }
        // Added first, then the sink checked under the same lock: from then on the sink stays
        // for this capture. (Checking before an `await` lost a race: the last capture ended
        // meanwhile, the sink closed, and the new capture waited for a plugin that had stopped.)
        let sharing = try engine.add(capture, socketPath: socketPath, source: nil, startedAt: startedAt)
        if sharing {
            if let drops = await segment.plugin.stats()?.dropped { engine.setPluginDropsBase(capture.id, drops) }
        } else {
            do {
                try engine.openSink(at: spec.paths.captureSink)
                let loaded = capturePluginLoaded
                // From here the plugin may be loaded: an unload after a failure is harmless.
                capturePluginLoaded = true
                try await segment.plugin.start(path: segment.path, sink: spec.paths.captureSink, loaded: loaded)
            } catch {
                engine.end(capture.id, reason: "")
                throw error
            }
        }
        logger.info("segment capture set up", metadata: ["capture": "\(capture.id)", "socket": "\(socketPath)"])
        return socketPath
    }

    /// The engine, made on first use (its thread runs only while captures do).
    func captureEngineForUse() -> CaptureEngine {
        if let captureEngine { return captureEngine }
        let engine = CaptureEngine(connectTimeout: captureConnectTimeout) { [weak self] event in
            Task { await self?.captureEvent(event) }
        }
        captureEngine = engine
        return engine
    }

    func captureEvent(_ event: CaptureEngine.Event) async {
        guard let captureEngine else { return }
        switch event {
        case .segmentClientClosed(let id):
            let drops = await capturePlugin()?.stats()?.dropped
            captureEngine.end(id, reason: "", pluginDrops: drops)
        case .segmentCapturesEnded:
            guard !shuttingDown else { return }
            try? await exclusively { await unloadCapturePluginIfIdle() }
        }
    }

    func capturePlugin() -> CapturePlugin? {
        guard owned, switchState == .running, let management = managementClient(timeout: .seconds(2)) else {
            return nil
        }
        return CapturePlugin(management: management)
    }

    /// Stops and unloads the switch's capture plugin once no segment capture needs it.
    func unloadCapturePluginIfIdle() async {
        guard capturePluginLoaded, captureEngine?.segmentCaptureCount ?? 0 == 0, captureEngine?.isSinkOpen != true
        else { return }
        capturePluginLoaded = false
        guard let plugin = capturePlugin() else { return }
        do {
            try await plugin.stopAndUnload()
            logger.info("capture plugin unloaded")
        } catch {
            logger.warning("cannot unload the switch's capture plugin: \(error)")
        }
    }

    /// Captures for `status`; nil when none runs. Reads the plugin's drop counter only while a
    /// segment capture runs.
    func captureStatuses() async -> [CaptureStatus]? {
        guard let captureEngine, captureEngine.isRunning else { return nil }
        let drops = captureEngine.segmentCaptureCount > 0 ? await capturePlugin()?.stats()?.dropped : nil
        let statuses = captureEngine.statuses(pluginDrops: drops)
        return statuses.isEmpty ? nil : statuses
    }

    /// Ends the captures of one endpoint (removed, left, gone).
    func endCaptures(of id: EndpointID, reason: String) {
        captureEngine?.endAll(reason: reason) { $0.endpointID == id }
    }

    /// Ends every segment capture (the switch exited: its plugin went with it).
    func endSegmentCaptures(reason: String) {
        capturePluginLoaded = false
        captureEngine?.endAll(reason: reason) { $0.endpointID == nil }
    }

    /// At shutdown: every capture gets its end record (briefly waited for), the plugin goes.
    func endAllCaptures(reason: String) async {
        guard let captureEngine else { return }
        if captureEngine.isRunning {
            let drops = captureEngine.segmentCaptureCount > 0 ? await capturePlugin()?.stats()?.dropped : nil
            captureEngine.endAll(reason: reason, pluginDrops: drops)
        }
        await unloadCapturePluginIfIdle()
        await captureEngine.waitUntilIdle()
    }

    /// At start: what a worker that was killed left. Sockets in the captures directory go
    /// (nobody listens on them), and a switch adopted with the plugin still loaded (inert: its
    /// socket broke with the old worker) has it stopped and unloaded.
    func removeCaptureLeftovers(adoptedSwitch: Bool) async {
        guard let spec else { return }
        let directory = spec.paths.capturesDir
        if let names = FileSystem.listDirectory(directory) {
            for name in names { FileSystem.removeFile(directory + "/" + name) }
            FileSystem.removeDirectory(directory)
            logger.info("removed what an earlier worker's captures left", metadata: ["directory": "\(directory)"])
        }
        guard adoptedSwitch, let plugin = capturePlugin() else { return }
        do {
            guard try await plugin.isLoaded() else { return }
            try await plugin.stopAndUnload()
            logger.info("unloaded the capture plugin an earlier worker left loaded in the switch")
        } catch {
            logger.warning("cannot check the switch for a leftover capture plugin: \(error)")
        }
    }
}

extension Worker {
    /// For the unit tests: a capture whose command never connects is forgotten sooner.
    func setCaptureConnectTimeout(_ timeout: Duration) { captureConnectTimeout = timeout }
}
