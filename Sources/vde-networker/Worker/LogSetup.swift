import Logging
import Shared

/// Logging of the worker: to stderr (stdout carries the protocol), one label per network.
enum LogSetup {
    static let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// The label every line carries: `vde-networker[<short network ID>]`, so that the lines of
    /// several workers in one journal can be told apart.
    static func label(networkID: NetworkID) -> String {
        "vde-networker[\(networkID.short)]"
    }

    /// The same format as the supervisor's: journald priorities under systemd, timestamps elsewhere.
    static func bootstrap(level: Logger.Level) {
        VDELogHandler.bootstrap(level: level)
    }
}
