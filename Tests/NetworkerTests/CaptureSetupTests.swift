import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// What a capture needs from the host before it starts: the capture plugin, found beside the
/// binary or in an installation's lib directory and refused unless only root can change it
/// (it runs inside a root switch); and a switch run as a hub (`-o hub=true`).
@Suite struct CaptureSetupTests {
    /// A scratch tree `<dir>/bin`, `<dir>/lib/vde-supervisor`.
    func tree() throws -> String {
        let directory = try #require(FakeWorkerFixture.makeScratchDirectory("/tmp/vdenw-plugin"))
        try FileSystem.makeDirectories(directory + "/bin")
        try FileSystem.makeDirectories(directory + "/lib/vde-supervisor")
        return directory
    }

    @Test func thePluginIsFoundBesideTheBinaryFirstThenInTheInstallationsLibDirectory() throws {
        let root = try tree()
        defer { FakeWorkerFixture.removeTree(root) }
        let binary = root + "/bin/vde-networker"
        #expect(Executables.locateCapturePlugin(executable: binary) == nil, "none installed")
        try FileSystem.write(Array("so".utf8), to: root + "/lib/vde-supervisor/vde-capture.so")
        #expect(Executables.locateCapturePlugin(executable: binary) == root + "/lib/vde-supervisor/vde-capture.so")
        try FileSystem.write(Array("so".utf8), to: root + "/bin/vde-capture.so")
        #expect(Executables.locateCapturePlugin(executable: binary) == root + "/bin/vde-capture.so")
    }

    @Test func aPluginOthersCouldChangeIsRefusedWithWhatToFix() throws {
        let root = try tree()
        defer { FakeWorkerFixture.removeTree(root) }
        let path = root + "/bin/vde-capture.so"
        var executables = Executables(
            vdeSwitch: "vde_switch", vdePlug2tap: "vde_plug2tap", ip: "ip", nsenter: "nsenter")
        #expect(throws: CaptureError.self) { try executables.checkedCapturePlugin() }
        executables.capturePlugin = path
        try FileSystem.write(Array("so".utf8), to: path, mode: 0o644)
        chmod(path, 0o664)
        #expect {
            try executables.checkedCapturePlugin()
        } throws: { error in
            "\(error)".contains("writable by nobody else") && "\(error)".contains("mode 664")
        }
        chmod(path, 0o644)
        if getuid() == 0 {
            #expect(try executables.checkedCapturePlugin() == path)
            chown(path, 1000, 1000)
            #expect(throws: CaptureError.self) { try executables.checkedCapturePlugin() }
        }
        unlink(path)
        symlink("/bin/true", path)
        #expect(throws: CaptureError.self) { try executables.checkedCapturePlugin() }
    }

    @Test func aHubSwitchIsStartedWithDashX() throws {
        var spec = try SwitchSpec(
            networkDir: "/run/vde-supervisor/abc", ctlDir: "/run/vde-supervisor/abc/ctl",
            managementSocket: "/run/vde-supervisor/abc/mgmt", mode: .own, group: nil, numPorts: 4)
        let executables = Executables(
            vdeSwitch: "/usr/bin/vde_switch", vdePlug2tap: "/usr/bin/vde_plug2tap", ip: "/usr/sbin/ip",
            nsenter: "/usr/bin/nsenter")
        #expect(!SwitchProcess.argv(spec: spec, executables: executables).contains("-x"))
        spec.hub = true
        #expect(SwitchProcess.argv(spec: spec, executables: executables).last == "-x")
    }

    @Test func thePluginsStatsLineIsRead() {
        let stats = CapturePlugin.Stats(["active=1 frames=12 dropped=3 stopped=-"])
        #expect(stats?.active == true && stats?.frames == 12 && stats?.dropped == 3)
        #expect(CapturePlugin.Stats(["vdecapture/stats: no such command"]) == nil)
    }
}
