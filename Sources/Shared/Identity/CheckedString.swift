/// A value that is text on the wire and in the state file, checked once when it is made or
/// decoded and trusted everywhere after: an ID, a tap name, a MAC address, a sandbox key.
///
/// It is encoded as one JSON string (its ``rawValue``), so typed fields read and write the same
/// JSON as the plain strings they replace. A dictionary keyed by it is a JSON object
/// (`CodingKeyRepresentable`). A decoded value that breaks the rule fails the decode with the
/// rule's message at its JSON path.
///
/// A string literal written in code (a test's ID, a constant) is checked too: one that breaks the
/// rule is a programming error and stops the process. Text from outside goes through ``init(_:)``.
public protocol CheckedString: Codable, Hashable, Comparable, Sendable, CustomStringConvertible, CodingKeyRepresentable,
    ExpressibleByStringLiteral
{
    /// The text, as checked (and for some types normalised).
    var rawValue: String { get }
    /// Checks `text` against the type's rule; the error says what is accepted.
    init(_ text: String) throws(VDEError)
}

extension CheckedString {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do {
            try self.init(text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    public init(stringLiteral text: String) {
        do {
            try self.init(text)
        } catch {
            preconditionFailure(
                "the literal \"\(UntrustedText(text))\" breaks the rule of \(Self.self): \(error.message)")
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var codingKey: any CodingKey { CheckedStringKey(stringValue: rawValue) }

    /// A key that breaks the rule makes the decode of the dictionary fail.
    public init?<T: CodingKey>(codingKey: T) {
        guard let value = try? Self(codingKey.stringValue) else { return nil }
        self = value
    }
}

/// The coding key of a ``CheckedString`` used as a dictionary key.
struct CheckedStringKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
