/// A dockerd object ID: a network's (``NetworkID``) or an endpoint's (``EndpointID``), one type
/// per kind so that one cannot be passed for the other.
///
/// Docker IDs are 64 hex digits; tests and tools may send shorter ones. Anything outside ASCII
/// letters and digits is refused, because IDs end up in interface names, paths and argv.
public struct DockerID<Kind: DockerIDKind>: CheckedString {
    public static var maxBytes: Int { 128 }
    /// How much of an ID operators see (`docker network ls` shows 12 characters).
    public static var shortLength: Int { 12 }

    public let rawValue: String

    public init(_ text: String) throws(VDEError) {
        let valid =
            (1...Self.maxBytes).contains(text.utf8.count)
            && text.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)
            }
        guard valid else {
            throw .invalid(
                "\(Kind.name) ID '\(UntrustedText(text))' is not a Docker ID (letters and digits, at most \(Self.maxBytes))"
            )
        }
        rawValue = text
    }

    /// The first 12 characters, as `docker network ls` shows them: logs, messages, run dirs.
    public var short: String { String(rawValue.prefix(Self.shortLength)) }
}

/// What a ``DockerID`` identifies; its name appears in messages.
public protocol DockerIDKind: Sendable {
    static var name: String { get }
}

public enum NetworkKind: DockerIDKind { public static var name: String { "network" } }
public enum EndpointKind: DockerIDKind { public static var name: String { "endpoint" } }

/// A Docker network's ID (`NetworkID` of the plugin calls).
public typealias NetworkID = DockerID<NetworkKind>
/// A Docker endpoint's ID (`EndpointID`): one container's attachment to one network.
public typealias EndpointID = DockerID<EndpointKind>
