import Glibc
import Logging
import Shared

/// The optional settings file (`--config`, default /etc/vde-supervisor/vde-supervisor.conf):
/// `key = value` lines, `#` comments. Read at start and again on SIGHUP.
/// Known keys: `log_level` (trace, debug, info, warning, error).
struct ConfigFile: Equatable {
    static let defaultPath = "/etc/vde-supervisor/vde-supervisor.conf"

    var logLevel: Logger.Level?

    /// Reads the file and makes its `log_level` (or `otherwise`) the process's level; returns it.
    /// Used at start and on SIGHUP. A bad file throws and changes nothing.
    static func applyLogLevel(from path: String, otherwise: Logger.Level) throws -> Logger.Level {
        let level = try load(path).logLevel ?? otherwise
        LogLevelControl.shared.current = level
        return level
    }

    /// Reads the file; a missing file is an empty configuration.
    static func load(_ path: String) throws -> ConfigFile {
        let text: [UInt8]
        do {
            text = try FileSystem.read(path, limit: (1 << 16) + 1)
        } catch {
            if error.errno == ENOENT { return ConfigFile() }
            throw VDEError.system("cannot read \(path): \(error.text)")
        }
        if text.count > 1 << 16 { throw VDEError.invalid("\(path) is larger than 64 KiB") }
        return try parse(String(decoding: text, as: UTF8.self), path: path)
    }

    static func parse(_ text: String, path: String) throws -> ConfigFile {
        var config = ConfigFile()
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let trimmed = line.trimmingCharacters(in: " \t\r")
            if trimmed.isEmpty { continue }
            let parts = trimmed.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: " \t") }
            guard parts.count == 2 else {
                throw VDEError.invalid("\(path) line \(index + 1): expected key = value")
            }
            switch parts[0] {
            case "log_level":
                guard let level = Logger.Level(rawValue: parts[1]) else {
                    throw VDEError.invalid(
                        "\(path) line \(index + 1): log_level must be trace, debug, info, warning or error")
                }
                config.logLevel = level
            default:
                throw VDEError.invalid(
                    "\(path) line \(index + 1): unknown key '\(UntrustedText(parts[0]))' (known: log_level)")
            }
        }
        return config
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var s = self
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}
