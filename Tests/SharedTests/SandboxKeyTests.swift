import Shared
import Testing

@Suite struct SandboxKeyTests {
    /// Sandbox keys are paths, not socket paths: a key longer than a unix socket path is fine.
    @Test(arguments: [
        "/var/run/docker/netns/1a2b3c4d5e6f", "/" + String(repeating: "n", count: 200),
        "/" + String(repeating: "p", count: SandboxKey.maxBytes - 1),
    ])
    func acceptedKeys(_ path: String) {
        #expect((try? SandboxKey(path))?.rawValue == path)
    }

    @Test(arguments: [
        ("", "empty"), ("var/run/docker/netns/x", "absolute"), ("/var/run/x\n", "control characters"),
        ("/" + String(repeating: "p", count: SandboxKey.maxBytes), "at most \(SandboxKey.maxBytes)"),
    ])
    func refusedKeys(_ path: String, mentioning word: String) {
        let error = #expect(throws: VDEError.self) { try SandboxKey(path) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains(word) == true, "\(String(describing: error))")
        #expect(error?.message.contains("unix socket") == false, "a sandbox key is not a socket path")
    }
}
