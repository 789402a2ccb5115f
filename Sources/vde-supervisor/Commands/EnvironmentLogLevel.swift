import ArgumentParser
import Glibc
import Logging
import Shared

/// `run`'s log level when `--log-level` is not given: the environment's `LOG_LEVEL`, else `info`.
/// A container (`docker run -e LOG_LEVEL=debug`) and the managed plugin (`docker plugin set
/// vde-supervisor:latest LOG_LEVEL=debug`) set it that way without repeating the command line.
/// An empty value counts as unset (a plugin's config declares the variable with an empty default).
enum EnvironmentLogLevel {
    static let variable = "LOG_LEVEL"

    /// This process's `LOG_LEVEL`, if set.
    static var current: String? { getenv(variable).map { String(cString: $0) } }

    static func resolve(flag: Logger.Level?, value: String? = current) throws -> Logger.Level {
        if let flag { return flag }
        guard let text = value, !text.isEmpty else { return .info }
        guard let level = Logger.Level(rawValue: text) else {
            let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError(
                "\(variable)=\(UntrustedText(text)) is not a log level: use one of \(names), or unset it")
        }
        return level
    }
}
