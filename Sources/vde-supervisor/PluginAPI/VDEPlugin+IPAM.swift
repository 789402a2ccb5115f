import Shared

/// The IpamDriver calls: the rules live in `IPAMState`; here they are applied and persisted.
extension VDEPlugin {
    static let localAddressSpace = "vde-local"
    static let globalAddressSpace = "vde-global"

    func requestPool(_ request: DockerAPI.RequestPoolRequest) throws -> DockerAPI.RequestPoolResponse {
        try AddressChecks.check(request)
        let response = try changeIPAM { try $0.requestPool(request) }
        logger.info("pool allocated", metadata: ["pool": "\(response.Pool)", "poolID": "\(response.PoolID)"])
        return response
    }

    func releasePool(_ request: DockerAPI.ReleasePoolRequest) throws -> DockerAPI.Empty {
        try changeIPAM { try $0.releasePool(id: request.PoolID) }
        logger.info("pool released", metadata: ["poolID": "\(request.PoolID)"])
        return DockerAPI.Empty()
    }

    func requestAddress(_ request: DockerAPI.RequestAddressRequest) throws -> DockerAPI.RequestAddressResponse {
        try AddressChecks.check(request, in: state.ipam)
        let response = try changeIPAM { try $0.requestAddress(request) }
        logger.debug("address allocated", metadata: ["poolID": "\(request.PoolID)", "address": "\(response.Address)"])
        return response
    }

    func releaseAddress(_ request: DockerAPI.ReleaseAddressRequest) throws -> DockerAPI.Empty {
        try AddressChecks.check(request, in: state.ipam)
        try changeIPAM { try $0.releaseAddress(request) }
        logger.debug("address released", metadata: ["poolID": "\(request.PoolID)", "address": "\(request.Address)"])
        return DockerAPI.Empty()
    }

    /// Applies one IPAM rule to a copy of the state and commits it; a failure changes nothing.
    ///
    /// The record is written before the reply, so no crash of the supervisor loses it, and
    /// synced right after it (``commitSyncingAfterReply(_:)``): four IPAM calls per `docker
    /// network create` + `rm` each waited 0.35 ms for the disk, more than the floor plugin's whole
    /// call. A power cut loses a confirmed IPAM change only if it comes within that sync, and what
    /// dockerd stores after our reply comes later still: it records a network only after its
    /// driver's CreateNetwork, and ours syncs the journal (every record before its own) before
    /// it replies; the other drivers take milliseconds. A release lost that way would leave an
    /// address or pool taken that Docker has let go.
    private func changeIPAM<T>(_ change: (inout IPAMState) throws -> T) throws -> T {
        var newState = state
        let result = try change(&newState.ipam)
        try commitSyncingAfterReply(newState)
        return result
    }
}
