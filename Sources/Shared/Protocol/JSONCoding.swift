#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// One place that decides how every JSON of the project is encoded and decoded,
/// so that the state file, the worker link and the plugin API agree.
public enum JSONCoding {
    /// Encodes `value` to compact JSON with sorted keys (stable output for diffs and tests).
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    /// Encodes `value` to indented JSON, for files a human may read.
    public static func encodePretty<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    /// Decodes `type`; `userInfo` reaches the types' `init(from:)` (e.g. what a migration of an
    /// old file needs to know).
    public static func decode<T: Decodable>(
        _ type: T.Type, from bytes: some Collection<UInt8>,
        userInfo: [CodingUserInfoKey: any Sendable] = [:]
    ) throws -> T {
        let decoder = JSONDecoder()
        decoder.userInfo = userInfo
        return try decoder.decode(type, from: Data(bytes))
    }

    public static func string<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encode(value), as: UTF8.self)
    }

    /// A decoding error, short enough for a log line or an error reply: which field is missing,
    /// null or of the wrong type, or that the bytes are not JSON.
    public static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty:
            "not valid JSON (\(context.debugDescription))"
        case DecodingError.keyNotFound(let key, _):
            "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(let type, let context):
            "field '\(path(context))' is not of type \(type)"
        case DecodingError.valueNotFound(_, let context):
            "field '\(path(context))' is null"
        case DecodingError.dataCorrupted(let context):
            "field '\(path(context))': \(context.debugDescription)"
        default:
            "\(error)"
        }
    }

    private static func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map(\.stringValue).joined(separator: ".")
    }
}
