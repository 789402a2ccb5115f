import Shared

/// The format of `state.journal`: one line per record, `<crc32 of the JSON, 8 hex digits>
/// <StateChange as compact JSON>\n` (compact JSON escapes newlines, so a record is one line).
///
/// A record is confirmed once it and everything before it are synced (the reply comes after),
/// so a crash can only damage the last record: a damaged or unterminated tail is a write that
/// was never confirmed and is dropped. Damage followed by a whole record is not that, and is
/// an error.
enum StateJournal {
    /// What a journal file holds.
    struct Contents {
        var records: [StateChange] = []
        /// The bytes up to the end of the last whole record.
        var validLength = 0
        /// The bytes after it: a torn last write (dropped).
        var tornBytes = 0
    }

    /// One record as a line.
    static func frame(_ change: StateChange) throws -> [UInt8] {
        let json = try JSONCoding.encode(change)
        let hex = String(CRC32.checksum(json), radix: 16)
        return Array((String(repeating: "0", count: 8 - hex.count) + hex + " ").utf8) + json + [newline]
    }

    /// Reads the records of a journal's bytes (see the type's comment for what is dropped).
    static func parse(
        _ bytes: [UInt8], path: String, userInfo: [CodingUserInfoKey: any Sendable]
    ) throws(StateStoreError) -> Contents {
        var contents = Contents()
        var offset = 0
        var line = 0
        /// The first damaged line: (line number, byte offset, what is wrong).
        var damage: (line: Int, offset: Int, detail: String)?
        while offset < bytes.count {
            line += 1
            guard let end = bytes[offset...].firstIndex(of: newline) else {
                if damage == nil { damage = (line, offset, "an unterminated record") }
                break
            }
            guard let json = checkedJSON(bytes[offset..<end]) else {
                if damage == nil { damage = (line, offset, "a record whose checksum does not match") }
                offset = end + 1
                continue
            }
            if let damage {
                throw .journalCorrupt(
                    path: path, line: damage.line, offset: damage.offset,
                    detail: "\(damage.detail), followed by a whole record at line \(line)")
            }
            do {
                contents.records.append(try JSONCoding.decode(StateChange.self, from: json, userInfo: userInfo))
            } catch {
                throw .journalCorrupt(
                    path: path, line: line, offset: offset,
                    detail: UntrustedText(JSONCoding.describe(error)).description)
            }
            offset = end + 1
            contents.validLength = offset
        }
        contents.tornBytes = bytes.count - contents.validLength
        return contents
    }

    /// The JSON of a line whose checksum matches, else nil.
    private static func checkedJSON(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard line.count > 9, line[line.startIndex + 8] == UInt8(ascii: " "),
            let text = String(validating: line.prefix(8), as: UTF8.self), let crc = UInt32(text, radix: 16)
        else { return nil }
        let json = line.dropFirst(9)
        return CRC32.checksum(json) == crc ? json : nil
    }

    private static let newline = UInt8(ascii: "\n")
}
