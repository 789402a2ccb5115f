/// What the supervisor asks a worker to capture (`startCapture`): the whole segment (every
/// frame that enters the network's switch, from containers, VMs and external plugs alike) or
/// one endpoint (both directions of its tap, seen from inside the container's namespace).
public struct CaptureSpec: Codable, Sendable, Equatable {
    public static let maxFilterBytes = 1024

    public var id: CaptureID
    /// Nil: the whole segment.
    public var endpointID: EndpointID?
    /// The BPF expression the capture command applies, for `status` only: the worker never
    /// interprets it (the command filters, see docs/capture.md). At most ``maxFilterBytes``, no
    /// control characters.
    public var filter: String?

    /// A capture without a filter text.
    public init(id: CaptureID, endpointID: EndpointID? = nil) {
        self.id = id
        self.endpointID = endpointID
        self.filter = nil
    }

    public init(id: CaptureID, endpointID: EndpointID?, filter: String?) throws(VDEError) {
        if let filter {
            guard filter.utf8.count <= Self.maxFilterBytes,
                !filter.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f })
            else {
                throw .invalid(
                    "a capture filter is at most \(Self.maxFilterBytes) bytes of printable text; got '\(UntrustedText(filter))'"
                )
            }
        }
        self.id = id
        self.endpointID = endpointID
        self.filter = filter
    }

    private enum CodingKeys: String, CodingKey { case id, endpointID, filter }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(
                id: container.decode(CaptureID.self, forKey: .id),
                endpointID: container.decodeIfPresent(EndpointID.self, forKey: .endpointID),
                filter: container.decodeIfPresent(String.self, forKey: .filter))
        } catch let error as VDEError {
            throw DecodingError.dataCorrupted(.init(codingPath: container.codingPath, debugDescription: error.message))
        }
    }
}

/// A running (or just ended) capture as its worker reports it, in `status` and in the
/// capture's end record.
public struct CaptureStatus: Codable, Sendable, Equatable {
    public var id: CaptureID
    /// Nil: the whole segment.
    public var endpointID: EndpointID?
    public var filter: String?
    /// When the worker set the capture up, in milliseconds since the epoch.
    public var startedAt: Int64
    /// The capture command's process (SO_PEERCRED of its connection); nil until it connected.
    public var clientPID: Int32?
    public var clientUID: UInt32?
    /// Frames handed to the capture command (before its filter).
    public var frames: UInt64
    /// Frames the capture lost because its reader was slow (its socket was full) or because
    /// the switch's capture port was full; never frames of the network itself.
    public var dropped: UInt64

    public init(
        id: CaptureID, endpointID: EndpointID? = nil, filter: String? = nil, startedAt: Int64,
        clientPID: Int32? = nil, clientUID: UInt32? = nil, frames: UInt64 = 0, dropped: UInt64 = 0
    ) {
        self.id = id
        self.endpointID = endpointID
        self.filter = filter
        self.startedAt = startedAt
        self.clientPID = clientPID
        self.clientUID = clientUID
        self.frames = frames
        self.dropped = dropped
    }
}
