import Shared

/// The control socket's API (root only): `GET /v1/status` gives the ``StatusReport``.
struct ControlAPI: Sendable {
    let plugin: VDEPlugin

    func reply(method: String, path: String) async -> PluginReply {
        guard method == "GET" else {
            return PluginRouter.errorReply(status: 405, "the control socket answers GET only", ipam: false)
        }
        switch path {
        case "/v1/status":
            let report = await plugin.statusReport(startedAt: plugin.startedAt)
            guard let body = try? JSONCoding.encode(report) else {
                return PluginRouter.errorReply(status: 500, "could not encode the status", ipam: false)
            }
            return PluginReply(status: 200, body: body)
        default:
            return PluginRouter.errorReply(
                status: 404, "unknown control path \(UntrustedText(path)); try GET /v1/status", ipam: false)
        }
    }
}
