#if canImport(Glibc)
    import Glibc
#endif

/// Readers of `/proc`: the one place that parses a process's stat line, command line, children
/// and open files.
public enum ProcFS {
    /// The fields of `/proc/PID/stat` this project uses.
    public struct Stat: Sendable, Equatable {
        /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
        public var state: Character
        public var parent: pid_t
        /// Clock ticks since boot (field 22): with the pid, names a process beyond doubt.
        public var startTime: UInt64

        public init(state: Character, parent: pid_t, startTime: UInt64) {
            self.state = state
            self.parent = parent
            self.startTime = startTime
        }

        public var isGone: Bool { state == "Z" || state == "X" }
    }

    /// The stat of `pid`; nil when there is no such process (or the line cannot be read).
    public static func stat(of pid: pid_t) -> Stat? {
        guard pid > 0, let text = FileSystem.readFile("/proc/\(pid)/stat", limit: 4096) else { return nil }
        return parseStat(text)
    }

    /// Parses a `/proc/PID/stat` line. The command name, in parentheses, may itself hold spaces
    /// and parentheses, so the last `)` ends it; the fields after it start at the state (field 3).
    public static func parseStat(_ text: String) -> Stat? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 19, fields[0].count == 1, let state = fields[0].first,
            let parent = pid_t(fields[1]), let start = UInt64(fields[19])
        else { return nil }
        return Stat(state: state, parent: parent, startTime: start)
    }

    /// The last path component of argv[0] of `pid`; nil for a zombie, a kernel thread or a vanished process.
    public static func program(of pid: pid_t) -> String? {
        guard let bytes = FileSystem.readBytes("/proc/\(pid)/cmdline", limit: 4096), !bytes.isEmpty else { return nil }
        let first =
            bytes.split(separator: 0, omittingEmptySubsequences: false).first.map {
                String(decoding: $0, as: UTF8.self)
            } ?? ""
        return FileSystem.lastComponent(of: first)
    }

    /// The argv of `pid` (`/proc/PID/cmdline`, split at NUL bytes); nil for a zombie, a kernel
    /// thread or a vanished process.
    public static func arguments(of pid: pid_t) -> [String]? {
        guard var bytes = FileSystem.readBytes("/proc/\(pid)/cmdline", limit: 1 << 16), !bytes.isEmpty else {
            return nil
        }
        if bytes.last == 0 { bytes.removeLast() }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The network namespace `pid` is in, as the device and inode of `/proc/PID/ns/net`; nil
    /// when it cannot be read. Equal to ``FileSystem/fileID(_:)`` of a namespace's bind mount
    /// (a sandbox key) when the process is in that namespace.
    public static func networkNamespace(of pid: pid_t) -> FileSystem.FileID? {
        FileSystem.fileID("/proc/\(pid)/ns/net")
    }

    /// The children of `pid`, from `/proc/PID/task/*/children` (a few small files, not a walk
    /// over every process).
    public static func children(of pid: pid_t) -> [pid_t] {
        var result: [pid_t] = []
        for task in FileSystem.listDirectory("/proc/\(pid)/task") ?? [] where pid_t(task) != nil {
            guard let text = FileSystem.readFile("/proc/\(pid)/task/\(task)/children") else { continue }
            result += text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { pid_t($0) }
        }
        return result
    }

    /// The open descriptors of `pid` with what each points to (`/dev/net/tun`, `socket:[123]`);
    /// nil when they cannot be read.
    public static func descriptors(of pid: pid_t) -> [(fd: Int32, target: String)]? {
        guard let names = FileSystem.listDirectory("/proc/\(pid)/fd") else { return nil }
        return names.compactMap { name in
            guard let fd = Int32(name), let target = FileSystem.readLink("/proc/\(pid)/fd/\(name)") else { return nil }
            return (fd, target)
        }
    }

    /// `/proc/PID/fdinfo/FD` as text; nil when it cannot be read.
    public static func descriptorInfo(of pid: pid_t, fd: Int32) -> String? {
        FileSystem.readFile("/proc/\(pid)/fdinfo/\(fd)")
    }

    /// The path of this process's executable.
    public static func ownExecutable() -> String? {
        FileSystem.readLink("/proc/self/exe")
    }
}
