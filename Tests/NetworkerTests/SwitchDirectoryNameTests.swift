import Testing

@testable import vde_networker

@Suite struct SwitchDirectoryNameTests {
    @Test func onlyTheSwitchsOwnNamesAreItsNames() {
        for name in ["ctl", "001.6", "032.17", "1024.9", ".01234-00000"] {
            #expect(SwitchDirectory.isSwitchName(name), "\(name)")
        }
        for name in [
            "docker.sock", "ctl2", "mgmt", "01.6", "001.", ".vde-supervisor", "monitor", "001.6x", ".1234-00000",
            "a01.6",
        ] {
            #expect(!SwitchDirectory.isSwitchName(name), "\(name)")
        }
    }
}
