import Shared

extension Worker {
    /// Gives the endpoint `link` (see ``WorkerCommand/setLink(endpointID:link:)``).
    func setLink(_ id: EndpointID, link: LinkSettings) async throws -> EndpointStatus {
        guard endpoints[id] != nil else { throw EndpointError.unknown(id) }
        throw VDEError.unavailable("link shaping is not built yet")
    }
}
