import Glibc
import Shared
import Testing

@testable import vde_supervisor

/// A new supervisor restores its networks at most ``VDEPlugin/restoreWidth`` at once, and
/// `status` answers meanwhile, naming the networks not restored yet (issue 17: 1000 networks).
/// Against the stand-in worker: its `start` waits, once a gate file exists, until a go file does.
@Suite(.serialized)
struct RestoreAtScaleTests {
    static let networks = 40

    /// Network i's ID: 64 hex digits, unique in the first 12 (the run dir's name).
    static func networkID(_ i: Int) -> String {
        let hex = String(i, radix: 16)
        return String(repeating: "0", count: 4 - hex.count) + hex + String(repeating: "a", count: 60)
    }

    @Test func statusAnswersDuringTheRestoreAndAtMostTheWidthStartAtOnce() async throws {
        signal(SIGPIPE, SIG_IGN)
        let standIn = StandInWorker(name: "restore")
        defer { standIn.remove() }
        let (gate, go) = (standIn.directory + "/gate", standIn.directory + "/go")
        // While the gate exists, a `start` is held until `go` exists (the worker's first attempt
        // under way); the wait is the stand-in's, the test polls the plugin's state.
        let prelude = """
                case "$line" in *'"command":{"start"'*)
                    if [ -e \(gate) ]; then while [ ! -e \(go) ]; do sleep 0.02; done; fi ;;
                esac
            """
        let first = try standIn.plugin(prelude: prelude, cases: "")
        for i in 0..<Self.networks { try await first.createNetwork(id: Self.networkID(i)) }
        await first.stopAllWorkers()
        let startsBefore = standIn.commands("start").count
        #expect(startsBefore == Self.networks)

        try FileSystem.write([], to: gate, mode: 0o644)
        let second = try standIn.plugin(prelude: prelude, cases: "")
        let restore = Task { await second.restoreNetworks() }
        // Wait until the first batch is under way (each launched worker logs its `start`).
        let deadline = ContinuousClock.now + .seconds(30)
        while standIn.commands("start").count < startsBefore + VDEPlugin.restoreWidth, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let report = await second.statusReport(startedAt: .now)
        let launched = standIn.commands("start").count - startsBefore
        #expect(launched == VDEPlugin.restoreWidth, "\(launched) workers got `start` at once")
        #expect(report.networks.count == Self.networks)
        #expect(report.networks.allSatisfy { $0.worker.state == "starting" })
        #expect(report.supervisor.statusLine.contains("\(Self.networks) starting"), "\(report.supervisor.statusLine)")

        try FileSystem.write([], to: go, mode: 0o644)
        await restore.value
        #expect(standIn.commands("start").count == startsBefore + Self.networks)
        // Every worker runs (the stand-in answers `status` with a pong, so status itself would
        // call them unresponsive: the line counts phases).
        let line = await second.statusLine()
        #expect(line.hasSuffix("workers: \(Self.networks) healthy"), "\(line)")
        await second.stopAllWorkers()
    }
}
