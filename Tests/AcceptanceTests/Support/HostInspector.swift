import Foundation

/// Reads what runs on this host from /proc and /sys: processes, their argv, network links.
enum HostInspector {
    struct ProcessInfo: Sendable, CustomStringConvertible {
        var pid: Int32
        var argv: [String]
        var description: String { "\(pid): \(argv.joined(separator: " "))" }
        /// The program's base name (argv[0] without its directory).
        var program: String { argv.first.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? "" }
    }

    /// The state letter of a process (R, S, Z, ...) or nil when it does not exist.
    static func processState(_ pid: Int32) -> Character? {
        guard let stat = TempDir.readText("/proc/\(pid)/stat"),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let rest = stat[stat.index(after: close)...].drop(while: { $0 == " " })
        return rest.first
    }

    /// Every live (non-zombie) process with its argv.
    static func processes() -> [ProcessInfo] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var result: [ProcessInfo] = []
        for entry in entries {
            guard let pid = Int32(entry), let raw = TempDir.readBytes("/proc/\(pid)/cmdline"), !raw.isEmpty else {
                continue
            }
            if let state = processState(pid), state == "Z" || state == "X" { continue }
            let argv = raw.split(separator: 0, omittingEmptySubsequences: false).map {
                String(decoding: $0, as: UTF8.self)
            }
            result.append(ProcessInfo(pid: pid, argv: argv.last == "" ? Array(argv.dropLast()) : argv))
        }
        return result
    }

    /// Processes of the VDE family (vde_switch, vde_plug2tap, vde_plug, wirefilter,
    /// vde-networker, vde-supervisor) whose argv mentions any of `needles` (paths, IDs, tap
    /// names). wirefilter is the plug of an endpoint whose link is impaired (issue 13).
    static func vdeProcesses(mentioning needles: [String]) -> [ProcessInfo] {
        let family = ["vde_switch", "vde_plug2tap", "vde_plug", "wirefilter", "vde-networker", "vde-supervisor"]
        return processes().filter { p in
            family.contains(p.program)
                && p.argv.contains { arg in needles.contains { !$0.isEmpty && arg.contains($0) } }
        }
    }

    /// The wirefilter plugs of the switch at `ctlDir` (`wirefilter -v CTLDIR:tap://IFNAME ...`).
    static func wirefilters(ctlDir: String) -> [ProcessInfo] {
        vdeProcesses(mentioning: [ctlDir + ":tap://"]).filter { $0.program == "wirefilter" }
    }

    /// The vde_plug2tap plugs of the switch at `ctlDir`.
    static func plug2taps(ctlDir: String) -> [ProcessInfo] {
        vdeProcesses(mentioning: [ctlDir]).filter { $0.program == "vde_plug2tap" }
    }

    /// True when a network link of that name exists in this process's netns.
    static func linkExists(_ name: String) -> Bool { TempDir.exists("/sys/class/net/\(name)") }

    /// Names of the links in this process's netns.
    static func links() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net"))?.sorted() ?? []
    }

    /// Links named like the plugin's taps: `vde` plus 12 hex digits.
    static func pluginTaps() -> Set<String> {
        Set(
            links().filter { name in
                name.hasPrefix("vde") && name.count == 15 && name.dropFirst(3).allSatisfy(\.isHexDigit)
            })
    }
}
