import Shared

/// The control socket's API (root only): `GET /v1/status` gives the ``StatusReport``;
/// `POST /v1/link` with a ``LinkRequest`` shows or changes links and answers a ``LinkReply``.
/// Errors are `{"Err": "..."}` with a 4xx/5xx status, as on the plugin socket.
struct ControlAPI: Sendable {
    let plugin: VDEPlugin

    func reply(method: String, path: String, body: [UInt8] = []) async -> PluginReply {
        switch (method, path) {
        case ("GET", "/v1/status"):
            let report = await plugin.statusReport(startedAt: plugin.startedAt)
            guard let body = try? JSONCoding.encode(report) else {
                return PluginRouter.errorReply(status: 500, "could not encode the status", ipam: false)
            }
            return PluginReply(status: 200, body: body)
        case ("POST", "/v1/link"):
            return await link(body)
        case (_, "/v1/status"), (_, "/v1/link"):
            return PluginRouter.errorReply(
                status: 405, "\(path) takes \(path == "/v1/link" ? "POST" : "GET"), not \(UntrustedText(method))",
                ipam: false)
        default:
            return PluginRouter.errorReply(
                status: 404, "unknown control path \(UntrustedText(path)); try GET /v1/status or POST /v1/link",
                ipam: false)
        }
    }

    private func link(_ body: [UInt8]) async -> PluginReply {
        let request: LinkRequest
        do {
            request = try JSONCoding.decode(LinkRequest.self, from: body)
        } catch {
            return PluginRouter.errorReply(
                status: 400, "malformed link request: \(JSONCoding.describe(error))", ipam: false)
        }
        do {
            let reply = try await plugin.link(request)
            return PluginReply(status: 200, body: try JSONCoding.encode(reply))
        } catch {
            let vdeError = VDEError(wrapping: error)
            return PluginRouter.errorReply(
                status: PluginRouter.httpStatus(for: vdeError.code), vdeError.message, ipam: false)
        }
    }
}
