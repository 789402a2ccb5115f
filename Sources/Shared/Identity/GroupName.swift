/// A Unix group name as `socket_group` gives it (`vde_switch -g`): 1 to 32 bytes of letters,
/// digits, `_`, `-` and `.`, not starting with `-` (it reaches argv). Whether the group exists
/// is the supervisor's check at CreateNetwork (`getgrnam`), not part of the rule.
public struct GroupName: CheckedString {
    public let rawValue: String

    public init(_ text: String) throws(VDEError) {
        let allowed = { (c: Unicode.Scalar) in
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "_" || c == "-"
                || c == "."
        }
        guard (1...32).contains(text.utf8.count), !text.hasPrefix("-"), text.unicodeScalars.allSatisfy(allowed) else {
            throw .invalid("'\(UntrustedText(text))' is not a valid group name")
        }
        rawValue = text
    }
}
