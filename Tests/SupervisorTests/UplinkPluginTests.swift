import Glibc
import Logging
import Shared
import Testing

@testable import vde_supervisor

/// `-o uplink` through the real plugin actor and its real ``NetworkWorker``, against a stand-in
/// worker (see ``StandInWorker``). No root needed: nothing touches the network.
@Suite(.serialized)
final class UplinkPluginTests {
    let worker: StandInWorker
    let plugin: VDEPlugin
    static let networkA = "ab11" + String(repeating: "0", count: 60)
    static let networkB = "ab22" + String(repeating: "0", count: 60)
    static let networkC = "ab33" + String(repeating: "0", count: 60)

    init() throws {
        signal(SIGPIPE, SIG_IGN)
        worker = StandInWorker(name: "uplink")
        plugin = try worker.plugin(cases: "")
    }

    deinit { worker.remove() }

    /// The worker's `start` carries the uplink and the MTU it implies; the state records both.
    @Test func theUplinkAndItsMTUReachTheWorkerAndTheState() async throws {
        try await plugin.createNetwork(id: Self.networkA, options: ["uplink": "vxvde://239.255.1.1/if=vxt0"])
        let start = try #require(worker.commands("start").first)
        #expect(start.contains(#""uplink":"vxvde://239.255.1.1/if=vxt0""#), "\(start)")
        #expect(start.contains(#""mtu":1450"#), "\(start)")
        let record = try #require(await plugin.state.networks[try NetworkID(Self.networkA)])
        #expect(record.switchSpec.uplink?.rawValue == "vxvde://239.255.1.1/if=vxt0")
        #expect(record.switchSpec.mtu == 1450)
        await plugin.stopAllWorkers()
    }

    /// A second network on the same segment (vdeplug4's defaults filled in) would merge the two:
    /// refused with both named, and nothing made; another vni is another segment.
    @Test func aSecondNetworkOnTheSameSegmentIsRefused() async throws {
        try await plugin.createNetwork(id: Self.networkA, options: ["uplink": "vxvde://239.0.0.1/if=vxt0"])
        do {
            try await plugin.createNetwork(id: Self.networkB, options: ["uplink": "vxvde:///vni=1/port=14789"])
            Issue.record("a second network on the same segment was accepted")
        } catch {
            let failure = VDEError(wrapping: error)
            #expect(failure.code == .conflict)
            #expect(
                failure.message.contains("same segment") && failure.message.contains("ab1100000000"),
                "\(failure.message)")
        }
        #expect(await plugin.state.networks[try NetworkID(Self.networkB)] == nil)
        try await plugin.createNetwork(id: Self.networkC, options: ["uplink": "vxvde://239.0.0.1/vni=2/if=vxt0"])
        #expect(await plugin.state.networks.count == 2)
        await plugin.stopAllWorkers()
    }
}
