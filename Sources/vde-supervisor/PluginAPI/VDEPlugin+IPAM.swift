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
    private func changeIPAM<T>(_ change: (inout IPAMState) throws -> T) throws -> T {
        var newState = state
        let result = try change(&newState.ipam)
        try commit(newState)
        return result
    }
}
