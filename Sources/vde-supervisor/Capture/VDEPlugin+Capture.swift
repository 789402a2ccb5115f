import Shared

/// `vde-supervisor capture`: the supervisor resolves the network and endpoint, makes the
/// capture's ID and asks the network's worker to set the capture up (``WorkerCommand/startCapture(capture:)``).
/// Nothing is recorded: a capture lives as long as the command's connection to the worker, and
/// the worker reports the running ones in its status. The frames never pass through the
/// supervisor: the command reads them from the worker's socket.
extension VDEPlugin {
    func capture(_ request: CaptureRequest) async throws -> CaptureReply {
        let networkID = try resolveNetwork(request.network)
        try checkNotInFlight(networkID)
        let network = try existingNetwork(networkID)
        let endpointID = try request.endpoint.map { given throws -> EndpointID in
            try resolveEndpoint(given, in: network)
        }
        let filter = request.filter.flatMap { $0.isEmpty ? nil : $0 }
        let spec = try CaptureSpec(id: CaptureID.random(), endpointID: endpointID, filter: filter)
        guard let worker = live[networkID]?.worker else {
            throw VDEError.unavailable(
                "network \(networkID.short) has no worker now; retry when `status` shows it running")
        }
        let socket = try await worker.startCapture(spec)
        logger.info(
            "capture started",
            metadata: [
                "network": "\(networkID.short)", "capture": "\(spec.id)",
                "endpoint": "\(endpointID?.short ?? "segment")",
            ])
        return CaptureReply(
            id: spec.id, network: networkID.rawValue, shortNetwork: networkID.short,
            endpoint: endpointID?.rawValue, socket: socket)
    }
}
