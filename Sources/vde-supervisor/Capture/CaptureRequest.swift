import Shared

/// `POST /v1/capture` on the control socket: start a capture of one network's whole segment or
/// of one endpoint (`vde-supervisor capture`). The network and endpoint are a full ID or a
/// unique prefix (the CLI has already turned Docker names into IDs, as for ``LinkRequest``).
struct CaptureRequest: Codable, Sendable, Equatable {
    var network: String
    /// Nil: every frame that enters the network's switch.
    var endpoint: String?
    /// The BPF expression the capture command applies, shown by `status`; the supervisor and
    /// the worker never interpret it (``CaptureSpec/filter``).
    var filter: String?
}

/// The answer to a ``CaptureRequest``: where the capture command connects (within
/// ``WorkerProtocol/captureConnectTimeoutSeconds``) to read the capture's ``CaptureRecord``s.
struct CaptureReply: Codable, Sendable, Equatable {
    var id: CaptureID
    var network: String
    var shortNetwork: String
    /// Docker's name for the network: filled in by the CLI.
    var networkName: String?
    /// The endpoint's full ID; nil for a segment capture.
    var endpoint: String?
    /// Docker's name for the endpoint's container: filled in by the CLI.
    var container: String?
    /// The worker's one-shot unix stream socket.
    var socket: String
}

/// A running capture as `status` shows it (``StatusReport/NetworkInfo/captures``).
struct CaptureInfo: Codable, Sendable, Equatable {
    var id: String
    /// `segment` (every frame entering the switch) or `endpoint`.
    var target: String
    /// The endpoint's full and short ID, for an endpoint capture.
    var endpoint: String?
    var endpointShortID: String?
    /// Docker's name for the endpoint's container: asked of dockerd by the CLI, absent when it did not say.
    var container: String?
    /// The BPF expression the capture command applies; absent: every frame.
    var filter: String?
    /// When the worker set the capture up, milliseconds since the epoch.
    var startedAt: Int64
    /// The capture command's process and user; absent until it connected.
    var clientPID: Int32?
    var clientUID: UInt32?
    /// Frames the worker handed to the capture command (before its filter).
    var frames: UInt64
    /// Frames the capture lost to a slow reader or a full capture port (never the network's own).
    var dropped: UInt64

    init(_ status: CaptureStatus) {
        id = status.id.rawValue
        target = status.endpointID == nil ? "segment" : "endpoint"
        endpoint = status.endpointID?.rawValue
        endpointShortID = status.endpointID?.short
        filter = status.filter
        startedAt = status.startedAt
        clientPID = status.clientPID
        clientUID = status.clientUID
        frames = status.frames
        dropped = status.dropped
    }
}
