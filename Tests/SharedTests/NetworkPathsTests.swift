import Shared
import Testing

@Suite struct NetworkPathsTests {
    private let network: NetworkID = "0123456789abcdef0123"

    @Test func onlyACtlDirWithoutAColonCanBeShaped() throws {
        let own = try NetworkPaths(runDir: "/run/vde", network: network, options: NetworkOptions())
        try own.checkLinksCanBeShaped()
        let colon = try NetworkPaths(
            runDir: "/run/vde", network: network, options: NetworkOptions(socketDir: "/run/a:b"))
        #expect(throws: VDEError.self) { try colon.checkLinksCanBeShaped() }
    }

    @Test func ownSwitchLivesInTheNetworkDir() throws {
        let paths = try NetworkPaths(runDir: "/run/vde/", network: network, options: NetworkOptions())
        #expect(paths.networkDir == "/run/vde/0123456789ab")
        #expect(paths.ctlDir == "/run/vde/0123456789ab/ctl")
        #expect(paths.managementSocket == "/run/vde/0123456789ab/mgmt")
        #expect(paths.plugsDir == "/run/vde/0123456789ab/plugs")
        #expect(paths.deletingDir == "/run/vde/0123456789ab/deleting")
        #expect(paths.creatingDir == "/run/vde/0123456789ab/creating")
        #expect(paths.switchPIDFile == "/run/vde/0123456789ab/switch.pid")
    }

    @Test func socketDirNamesTheSwitch() throws {
        let options = try NetworkOptions.parse(["socket_dir": "/run/lab/sw"])
        let paths = try NetworkPaths(runDir: "/run/vde", network: network, options: options)
        #expect(paths.networkDir == "/run/vde/0123456789ab")
        #expect(paths.ctlDir == "/run/lab/sw")
        #expect(paths.managementSocket == nil)
    }

    /// A switch the plugin may start at a `socket_dir` gets the plugin's own management socket;
    /// it is used only when the plugin did start that switch.
    @Test func createSocketsGivesTheSwitchAManagementSocketOfOurs() throws {
        let options = try NetworkOptions.parse(["socket_dir": "/run/lab/sw", "create_sockets": "true"])
        let paths = try NetworkPaths(runDir: "/run/vde", network: network, options: options)
        #expect(paths.managementSocket == "/run/vde/0123456789ab/mgmt")
        #expect(paths.managementSocket(switchStartedByPlugin: true) == "/run/vde/0123456789ab/mgmt")
        #expect(paths.managementSocket(switchStartedByPlugin: false) == nil)
        let named = try NetworkPaths(
            runDir: "/run/vde", network: network,
            options: NetworkOptions.parse(["socket_dir": "/run/lab/sw", "management_socket": "/run/lab/mgmt"]))
        #expect(named.managementSocket(switchStartedByPlugin: false) == "/run/lab/mgmt")
    }

    @Test func runDirTooLongForSocketsIsRefused() {
        let runDir = "/" + String(repeating: "r", count: 80)
        let error = #expect(throws: VDEError.self) {
            try NetworkPaths(runDir: runDir, network: network, options: NetworkOptions())
        }
        #expect(error?.message.contains("too long") == true)
    }

    @Test(arguments: [
        ("relative", "/run/c", nil), ("/run/n", "/run/../c", nil), ("/run/n", "/run/c", "/run/c"),
        ("/run/n", "/run/c", "/run/m/"),
    ])
    func badPathsAreRefused(networkDir: String, ctlDir: String, management: String?) {
        #expect(throws: VDEError.self) {
            try NetworkPaths(networkDir: networkDir, ctlDir: ctlDir, managementSocket: management)
        }
    }

    /// The wire and the state file keep the flat fields they had before `paths` existed.
    @Test func switchSpecKeepsItsFlatJSON() throws {
        let paths = try NetworkPaths(
            networkDir: "/run/vde/abc", ctlDir: "/run/vde/abc/ctl", managementSocket: "/run/vde/abc/mgmt")
        let spec = try SwitchSpec(paths: paths, mode: .own, group: "vde", numPorts: 8)
        let text = try JSONCoding.string(spec)
        #expect(
            text
                == #"{"ctlDir":"/run/vde/abc/ctl","group":"vde","managementSocket":"/run/vde/abc/mgmt","mode":"own","networkDir":"/run/vde/abc","numPorts":8}"#
        )
        #expect(try JSONCoding.decode(SwitchSpec.self, from: Array(text.utf8)) == spec)
    }

    @Test(arguments: [
        #"{"ctlDir":"/run/c","mode":"own","networkDir":"/run/n","numPorts":8}"#,  // own without management socket
        #"{"ctlDir":"/run/c","mode":"external","networkDir":"/run/n","numPorts":0}"#,  // no ports
        #"{"ctlDir":"run/c","mode":"external","networkDir":"/run/n","numPorts":8}"#,  // relative
        #"{"ctlDir":"/run/c","group":"-g","mode":"external","networkDir":"/run/n","numPorts":8}"#,
        #"{"ctlDir":"/run/c","mode":"external","numPorts":8}"#,  // no networkDir
    ])
    func badSwitchSpecFailsToDecode(_ json: String) {
        #expect(throws: DecodingError.self) { try JSONCoding.decode(SwitchSpec.self, from: Array(json.utf8)) }
    }
}
