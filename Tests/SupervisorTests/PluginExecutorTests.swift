import Glibc
import Shared
import Testing

@testable import vde_supervisor

extension VDEPlugin {
    func runsOnItsOwnQueue() -> Bool { executor.isCurrent }
}

@Suite struct PluginExecutorTests {
    /// The plugin's code (and so its state file syncs and group look-ups) runs on its own queue,
    /// not on a cooperative thread.
    @Test func thePluginRunsOnItsOwnQueue() async throws {
        var template = Array("/tmp/vde-executor-test-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer {
            $0.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/nonexistent"
        }
        defer {
            for file in ["/state/state.json", "/state/state.json.1", "/state"] { remove(directory + file) }
            rmdir(directory)
        }
        let plugin = try VDEPlugin(
            configuration: SupervisorConfiguration(
                socketPath: directory + "/vde.sock", stateDir: directory + "/state",
                runDir: directory + "/run", networkerPath: "/bin/false"),
            logger: .init(label: "test"))
        #expect(await plugin.runsOnItsOwnQueue())
        #expect(!plugin.executor.isCurrent, "the test itself is not on the plugin's queue")
    }
}
