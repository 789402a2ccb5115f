import Shared

/// The switch's capture plugin (`vde-switch-plugin/vde_capture.c`), driven through the
/// switch's management socket: loaded and started while a segment capture runs, stopped and
/// unloaded after, so a network nobody captures runs a switch without it.
struct CapturePlugin {
    /// The name the plugin gives itself (`plugin/list`, `plugin/del`, its commands' prefix).
    static let name = "vdecapture"

    /// What `vdecapture/stats` prints: `active=0|1 frames=N dropped=M stopped=REASON`.
    struct Stats: Equatable {
        var active: Bool
        var frames: UInt64
        var dropped: UInt64

        init?(_ lines: [String]) {
            var fields: [Substring: Substring] = [:]
            for word in lines.joined(separator: " ").split(separator: " ") {
                guard let equals = word.firstIndex(of: "=") else { continue }
                fields[word[..<equals]] = word[word.index(after: equals)...]
            }
            guard let active = fields["active"], let frames = fields["frames"].flatMap({ UInt64($0) }),
                let dropped = fields["dropped"].flatMap({ UInt64($0) })
            else { return nil }
            self.active = active == "1"
            self.frames = frames
            self.dropped = dropped
        }
    }

    var management: any SwitchManagement

    /// True when `plugin/list` names the plugin.
    func isLoaded() async throws(ManagementError) -> Bool {
        let reply = try await management.run(["plugin/list"])[0]
        return reply.data.contains { line in line.split(separator: " ").contains { $0 == Self.name } }
    }

    /// Loads the plugin from `path` unless it is loaded, and makes it send every frame to `sink`.
    func start(path: String, sink: String, loaded: Bool) async throws(CaptureError) {
        var commands: [String] = []
        if !loaded { commands.append("plugin/add \(path)") }
        commands.append("\(Self.name)/start \(sink)")
        let replies: [ManagementReply]
        do {
            replies = try await management.run(commands)
        } catch {
            throw CaptureError(vdeError: .system("cannot start the switch's capture plugin: \(error)"))
        }
        for (command, reply) in zip(commands, replies) where !reply.succeeded {
            let detail = ([reply.message] + reply.data).joined(separator: "; ")
            throw CaptureError(
                vdeError: .system("the switch refused '\(command)' (\(reply.code) \(detail))"))
        }
    }

    /// Stops it and unloads it; a plugin that is not loaded is no error.
    func stopAndUnload() async throws(ManagementError) {
        _ = try await management.run(["\(Self.name)/stop", "plugin/del \(Self.name)"])
    }

    /// Its counters; nil when it is not loaded or does not answer.
    func stats() async -> Stats? {
        guard let reply = try? await management.run(["\(Self.name)/stats"]).first, reply.succeeded else { return nil }
        return Stats(reply.data)
    }
}
