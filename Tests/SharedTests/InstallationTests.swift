import Shared
import Testing

@Suite struct InstallationTests {
    @Test func helpersAreLookedForBesideTheCommandThenInTheHelpersDirectory() {
        #expect(
            Installation.helperCandidates(named: "vde-networker", besideExecutable: "/usr/bin/vde-supervisor") == [
                "/usr/bin/vde-networker", "/usr/lib/vde-supervisor/vde-networker",
            ])
        #expect(
            Installation.helperCandidates(named: "vde-capture.so", besideExecutable: "/x/.build/release/vde-networker")
                == ["/x/.build/release/vde-capture.so", "/x/.build/lib/vde-supervisor/vde-capture.so"])
    }

    @Test func theVersionIsDottedNumbers() {
        let parts = Installation.version.split(separator: ".")
        #expect(parts.count == 3)
        #expect(parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isNumber) })
    }
}
