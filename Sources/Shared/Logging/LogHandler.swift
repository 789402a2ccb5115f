import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The log level of the whole process, changeable at run time (SIGHUP re-reads it).
public final class LogLevelControl: Sendable {
    public static let shared = LogLevelControl()
    private let level = Mutex<Logger.Level>(.info)

    public var current: Logger.Level {
        get { level.withLock { $0 } }
        set { level.withLock { $0 = newValue } }
    }
}

/// Writes log lines to stderr. Under systemd (`JOURNAL_STREAM` set) lines carry a syslog
/// priority prefix (`<6>`) and no timestamp, since journald adds its own; elsewhere they
/// start with an ISO 8601 time and the level.
public struct VDELogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let journald: Bool

    /// The level is the process-wide one; setting it on one logger changes nothing.
    public var logLevel: Logger.Level {
        get { LogLevelControl.shared.current }
        set {}
    }

    public init(label: String, journald: Bool = VDELogHandler.stderrIsJournal) {
        self.label = label
        self.journald = journald
    }

    /// Installs this handler for every logger of the process, at `level`.
    public static func bootstrap(level: Logger.Level) {
        LogLevelControl.shared.current = level
        LoggingSystem.bootstrap { label in VDELogHandler(label: label) }
    }

    /// True when stderr is connected to the journal (systemd sets `JOURNAL_STREAM`).
    public static var stderrIsJournal: Bool {
        guard let value = getenv("JOURNAL_STREAM") else { return false }
        let parts = String(cString: value).split(separator: ":")
        var info = stat()
        guard parts.count == 2, fstat(2, &info) == 0 else { return false }
        return UInt64(parts[0]) == UInt64(info.st_dev) && UInt64(parts[1]) == UInt64(info.st_ino)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        let fields =
            all.isEmpty
            ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let line: String
        if journald {
            line = "<\(Self.syslogPriority(event.level))>\(label): \(event.message)\(fields)\n"
        } else {
            line = "\(Self.timestamp()) \(event.level) \(label): \(event.message)\(fields)\n"
        }
        try? FileSystem.writeAll(Array(line.utf8), to: 2)
    }

    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int = 2) -> String {
            let s = String(value)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let micros = pad(Int32(now.tv_nsec / 1_000), 6)
        return "\(parts.tm_year + 1900)-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T"
            + "\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec)).\(micros)Z"
    }
}
