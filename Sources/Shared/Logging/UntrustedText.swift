/// Text that came from outside (a request, a file, a child's output), made safe to put in a log
/// line, an error message or a status table: control characters become `?`, and it is cut
/// after `limit` characters (`...` marks the cut).
///
/// Use it in interpolations: `"unknown option '\(UntrustedText(key))'"`.
public struct UntrustedText: Sendable, CustomStringConvertible {
    public static let defaultLimit = 100

    public let description: String

    public init(_ text: some StringProtocol, limit: Int = UntrustedText.defaultLimit) {
        let cleaned = String(
            String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? "?" : $0 }))
        description = cleaned.count > limit ? String(cleaned.prefix(limit)) + "..." : cleaned
    }
}
