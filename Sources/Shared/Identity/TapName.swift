/// The name of an endpoint's tap in the host namespace (before dockerd moves it into the
/// container, and after Leave).
///
/// The kernel allows 15 bytes (IFNAMSIZ - 1); the name reaches sysfs paths and `ip`/
/// `vde_plug2tap` argv, so only letters, digits, `_`, `.` and `-` are accepted, not a leading
/// `-`, not `.` or `..`.
public struct TapName: CheckedString {
    public static let maxBytes = 15
    /// Every tap the plugin names starts with this.
    public static let prefix = "vde"

    public let rawValue: String

    public init(_ text: String) throws(VDEError) {
        let bytes = Array(text.utf8)
        let allowed = { (c: UInt8) in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2e
                || c == 0x2d
        }
        guard (1...Self.maxBytes).contains(bytes.count), bytes.allSatisfy(allowed), bytes[0] != 0x2d, text != ".",
            text != ".."
        else {
            throw .invalid(
                "'\(UntrustedText(text))' is not a usable interface name: 1 to 15 characters out of letters, digits, '_', '.' and '-', not starting with '-'"
            )
        }
        rawValue = text
    }

    /// The tap of an endpoint: `vde` plus the first 12 characters of its ID (15 bytes at most).
    public init(endpoint: EndpointID) {
        rawValue = Self.prefix + endpoint.short
    }
}
