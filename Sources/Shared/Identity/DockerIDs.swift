/// The rule of dockerd's object IDs, shared by ``NetworkID`` and ``EndpointID``.
///
/// Docker IDs are 64 hex digits; tests and tools may send shorter ones. Anything outside ASCII
/// letters and digits is refused, because IDs end up in interface names, paths and argv.
enum DockerIDRule {
    static let maxBytes = 128
    /// How much of an ID operators see (`docker network ls` shows 12 characters).
    static let shortLength = 12

    static func check(_ text: String, kind: String) throws(VDEError) {
        let valid = (1...maxBytes).contains(text.utf8.count) && text.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)
        }
        guard valid else {
            throw .invalid("\(kind) ID '\(UntrustedText(text))' is not a Docker ID (letters and digits, at most \(maxBytes))")
        }
    }
}

/// A Docker network's ID (`NetworkID` of the plugin calls).
public struct NetworkID: CheckedString {
    public let rawValue: String

    public init(_ text: String) throws(VDEError) {
        try DockerIDRule.check(text, kind: "network")
        rawValue = text
    }

    /// The first 12 characters, as `docker network ls` shows them: logs, messages, run dirs.
    public var short: String { String(rawValue.prefix(DockerIDRule.shortLength)) }
}

/// A Docker endpoint's ID (`EndpointID`): one container's attachment to one network.
public struct EndpointID: CheckedString {
    public let rawValue: String

    public init(_ text: String) throws(VDEError) {
        try DockerIDRule.check(text, kind: "endpoint")
        rawValue = text
    }

    /// The first 12 characters, for logs and messages.
    public var short: String { String(rawValue.prefix(DockerIDRule.shortLength)) }
}
