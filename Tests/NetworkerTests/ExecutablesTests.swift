import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// Where the worker finds its programs. A spare resolves them before it has a network, maybe
/// long before: a program installed since must still be found when the network comes.
@Suite struct ExecutablesTests {
    /// A scratch directory holding an executable `vde_switch` (a stub, never run).
    func directoryWithSwitch() throws -> String {
        let directory = try #require(FakeWorkerFixture.makeScratchDirectory("/tmp/vdenw-path"))
        try FileSystem.write(Array("#!/bin/sh\n".utf8), to: directory + "/vde_switch", mode: 0o755)
        return directory
    }

    func complete(vdeSwitch: String) -> Executables {
        Executables(
            vdeSwitch: vdeSwitch, vdePlug2tap: "/x/vde_plug2tap", ip: "/x/ip", nsenter: "/x/nsenter",
            vdePlug: "/x/vde_plug", wirefilter: "/x/wirefilter")
    }

    @Test func aProgramNotFoundAheadIsLookedUpAgain() throws {
        let directory = try directoryWithSwitch()
        defer { FakeWorkerFixture.removeTree(directory) }
        let ahead = complete(vdeSwitch: "vde_switch")  // bare: it was not found then
        let refreshed = ahead.refreshedIfIncomplete(environmentPath: directory)
        #expect(refreshed.vdeSwitch == directory + "/vde_switch")
    }

    @Test func pathsFoundAheadAreKeptWithoutALookup() throws {
        let directory = try directoryWithSwitch()
        defer { FakeWorkerFixture.removeTree(directory) }
        let ahead = complete(vdeSwitch: "/usr/bin/vde_switch")
        // A lookup would find the scratch directory's first (it leads the PATH given).
        #expect(ahead.refreshedIfIncomplete(environmentPath: directory).vdeSwitch == "/usr/bin/vde_switch")
    }
}
