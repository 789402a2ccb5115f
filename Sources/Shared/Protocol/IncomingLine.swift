/// What one line from the supervisor turned out to be: the worker's decoding of its stdin
/// (in Shared so that the fuzz target in Fuzz/ decodes exactly as the worker does).
public enum IncomingLine: Sendable, Equatable {
    case request(WorkerRequest)
    /// Not a request the worker can serve. `id` is set when the line carried one, so that the
    /// supervisor gets a failure reply instead of waiting for a timeout.
    case invalid(id: UInt64?, reason: String)
    /// Longer than ``WorkerProtocol/maxLineBytes``; dropped unread.
    case oversized(length: Int)
    /// An empty (or all-blank) line; ignored.
    case blank

    /// Just enough of a request to answer a line that is not a valid request: its `v`, its `id`
    /// and the names of its `command` object's keys (each tolerated missing or mistyped).
    private struct Envelope: Decodable {
        var v: Int?
        var id: UInt64?
        var commandNames: [String]?

        private enum CodingKeys: String, CodingKey { case v, id, command }
        private struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            v = try? container.decodeIfPresent(Int.self, forKey: .v)
            id = try? container.decodeIfPresent(UInt64.self, forKey: .id)
            commandNames = (try? container.nestedContainer(keyedBy: AnyKey.self, forKey: .command))?.allKeys.map(
                \.stringValue)
        }
    }

    public static func decode(_ bytes: [UInt8]) -> IncomingLine {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0d }) { return .blank }
        let envelope = try? JSONCoding.decode(Envelope.self, from: bytes)
        guard let envelope else {
            return .invalid(id: nil, reason: "not a JSON object: \(preview(bytes))")
        }
        if let v = envelope.v, v != WorkerProtocol.version {
            return .invalid(
                id: envelope.id,
                reason: "protocol version \(v) is not supported; this worker speaks version \(WorkerProtocol.version)")
        }
        if let names = envelope.commandNames, names.count == 1, let name = names.first,
            WorkerCommand.Kind(rawValue: name) == nil
        {
            return .invalid(id: envelope.id, reason: "unknown command '\(UntrustedText(name))'")
        }
        do {
            return .request(try JSONCoding.decode(WorkerRequest.self, from: bytes))
        } catch {
            return .invalid(id: envelope.id, reason: "malformed request: \(JSONCoding.describe(error))")
        }
    }

    private static func preview(_ bytes: [UInt8]) -> String {
        let text = UntrustedText(String(decoding: bytes.prefix(80), as: UTF8.self)).description
        return bytes.count > 80 ? text + "..." : text
    }
}
