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

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }

    public static func string<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encode(value), as: UTF8.self)
    }
}
