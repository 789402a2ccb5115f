import Shared

/// The control socket's API (root only): `GET /v1/status` gives the ``StatusReport``;
/// `POST /v1/link` with a ``LinkRequest`` shows or changes links and answers a ``LinkReply``;
/// `POST /v1/capture` with a ``CaptureRequest`` starts a capture and answers a ``CaptureReply``.
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
        case ("POST", "/v1/capture"):
            return await capture(body)
        case (_, "/v1/status"), (_, "/v1/link"), (_, "/v1/capture"):
            return PluginRouter.errorReply(
                status: 405, "\(path) takes \(path == "/v1/status" ? "GET" : "POST"), not \(UntrustedText(method))",
                ipam: false)
        default:
            return PluginRouter.errorReply(
                status: 404,
                "unknown control path \(UntrustedText(path)); try GET /v1/status, POST /v1/link or POST /v1/capture",
                ipam: false)
        }
    }

    private func link(_ body: [UInt8]) async -> PluginReply {
        await call(LinkRequest.self, body, named: "link") { try await plugin.link($0) }
    }

    private func capture(_ body: [UInt8]) async -> PluginReply {
        await call(CaptureRequest.self, body, named: "capture") { try await plugin.capture($0) }
    }

    /// Decodes the request (400 when malformed), runs it, encodes the reply or the error.
    private func call<Request: Decodable, Reply: Encodable>(
        _ type: Request.Type, _ body: [UInt8], named name: String, _ run: (Request) async throws -> Reply
    ) async -> PluginReply {
        let request: Request
        do {
            request = try JSONCoding.decode(Request.self, from: body)
        } catch {
            return PluginRouter.errorReply(
                status: 400, "malformed \(name) request: \(JSONCoding.describe(error))", ipam: false)
        }
        do {
            let reply = try await run(request)
            return PluginReply(status: 200, body: try JSONCoding.encode(reply))
        } catch {
            let vdeError = VDEError(wrapping: error)
            return PluginRouter.errorReply(
                status: PluginRouter.httpStatus(for: vdeError.code), vdeError.message, ipam: false)
        }
    }
}
