/// A container's network namespace as dockerd names it in `Join` (`/var/run/docker/netns/<id>`).
///
/// It is a path the worker opens with `nsenter --net=`, not a socket the plugin binds, so the
/// unix-socket limit of 90 bytes does not apply: it must be absolute, shorter than `PATH_MAX`,
/// and free of control characters (it reaches argv and logs).
public struct SandboxKey: CheckedString {
    /// `PATH_MAX` counts the terminating NUL.
    public static let maxBytes = 4095

    /// The namespace's path.
    public let rawValue: String

    public init(_ path: String) throws(VDEError) {
        let shown = UntrustedText(path)
        guard !path.isEmpty else {
            throw .invalid("SandboxKey is empty; dockerd sends the container's network namespace path")
        }
        guard path.hasPrefix("/") else {
            throw .invalid("SandboxKey '\(shown)' must be an absolute path")
        }
        guard path.utf8.count <= Self.maxBytes else {
            throw .invalid("SandboxKey is \(path.utf8.count) bytes long; paths allow at most \(Self.maxBytes)")
        }
        guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw .invalid("SandboxKey '\(shown)' contains control characters")
        }
        rawValue = path
    }
}
