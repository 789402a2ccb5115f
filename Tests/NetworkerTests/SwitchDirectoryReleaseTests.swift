import Logging
import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// What ``SwitchDirectory/release(logger:)`` removes after the switch is gone: empty
/// directories that are the plugin's (inside the network's run dir, or carrying this network's
/// marker), never one holding anything else or marked by another network.
@Suite struct SwitchDirectoryReleaseTests {
    let otherNetwork: NetworkID = "fedcba9876543210000000000000000000000000000000000000000000000000"

    func scratch() throws -> String {
        var template = Array("/tmp/vdenw-release-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { $0.baseAddress.flatMap { mkdtemp($0) } }
        try #require(made != nil)
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    var logger: Logger {
        var logger = Logger(label: "release-test")
        logger.logLevel = .critical
        return logger
    }

    /// A switch killed after its grace leaves `<network dir>/ctl`; the worker removes it.
    @Test func anEmptyCtlDirInsideTheNetworkDirIsRemoved() throws {
        let root = try scratch()
        defer { FakeWorkerFixture.removeTree(root) }
        let networkDir = root + "/net"
        _ = try FileSystem.makeDirectories(networkDir + "/ctl")
        SwitchDirectory(path: networkDir + "/ctl", networkID: FakeWorkerFixture.networkID, networkDir: networkDir)
            .release(logger: logger)
        #expect(!FileSystem.exists(networkDir + "/ctl"))
    }

    @Test func aDirectoryWithAnythingLeftInItStays() throws {
        let root = try scratch()
        defer { FakeWorkerFixture.removeTree(root) }
        let networkDir = root + "/net"
        _ = try FileSystem.makeDirectories(networkDir + "/ctl")
        try FileSystem.write(Array("x".utf8), to: networkDir + "/ctl/notes")
        SwitchDirectory(path: networkDir + "/ctl", networkID: FakeWorkerFixture.networkID, networkDir: networkDir)
            .release(logger: logger)
        #expect(FileSystem.exists(networkDir + "/ctl/notes"))
    }

    @Test func aSocketDirOutsideLosesOnlyItsOwnMarker() throws {
        let root = try scratch()
        defer { FakeWorkerFixture.removeTree(root) }
        let ours = SwitchDirectory(
            path: root + "/ours", networkID: FakeWorkerFixture.networkID, networkDir: root + "/net")
        _ = try ours.claim(option: "socket_dir")
        let theirs = SwitchDirectory(path: root + "/theirs", networkID: otherNetwork, networkDir: root + "/other")
        _ = try theirs.claim(option: "socket_dir")
        let stranger = SwitchDirectory(
            path: root + "/theirs", networkID: FakeWorkerFixture.networkID, networkDir: root + "/net")

        ours.release(logger: logger)
        stranger.release(logger: logger)

        #expect(!FileSystem.exists(root + "/ours"))
        #expect(FileSystem.exists(root + "/theirs/" + SwitchDirectory.markerName), "another network's marker stays")
    }
}
