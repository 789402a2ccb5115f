import Shared

/// The IpamDriver calls: the rules live in `IPAMState`; here they are applied and persisted.
extension VDEPlugin {
    static let localAddressSpace = "vde-local"
    static let globalAddressSpace = "vde-global"

    func requestPool(_ request: DockerAPI.RequestPoolRequest) throws -> DockerAPI.RequestPoolResponse {
        var newState = state
        let response = try newState.ipam.requestPool(request)
        try commit(newState)
        logger.info("pool allocated", metadata: ["pool": "\(response.Pool)", "poolID": "\(response.PoolID)"])
        return response
    }

    func releasePool(_ request: DockerAPI.ReleasePoolRequest) throws -> DockerAPI.Empty {
        var newState = state
        try newState.ipam.releasePool(id: request.PoolID)
        try commit(newState)
        logger.info("pool released", metadata: ["poolID": "\(request.PoolID)"])
        return DockerAPI.Empty()
    }

    func requestAddress(_ request: DockerAPI.RequestAddressRequest) throws -> DockerAPI.RequestAddressResponse {
        var newState = state
        let response = try newState.ipam.requestAddress(request)
        try commit(newState)
        logger.debug("address allocated", metadata: ["poolID": "\(request.PoolID)", "address": "\(response.Address)"])
        return response
    }

    func releaseAddress(_ request: DockerAPI.ReleaseAddressRequest) throws -> DockerAPI.Empty {
        var newState = state
        try newState.ipam.releaseAddress(request)
        try commit(newState)
        logger.debug("address released", metadata: ["poolID": "\(request.PoolID)", "address": "\(request.Address)"])
        return DockerAPI.Empty()
    }
}
