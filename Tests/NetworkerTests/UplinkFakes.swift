import Logging
import Shared

@testable import vde_networker

/// A `vde_plug vde://CTLDIR URL` of the fake lab: holds a switch port while it runs.
final class FakeUplink: FakeChild, RunningUplink, @unchecked Sendable {
    let lab: FakeLab
    let url: UplinkURL

    init(lab: FakeLab, url: UplinkURL) {
        self.lab = lab
        self.url = url
        super.init(pid: lab.allocatePID())
    }

    override func willExit() {
        let pid = self.pid
        lab.with { state in state.ports = state.ports.filter { $0.value != pid } }
    }

    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?, timeout: Duration)
        async throws(UplinkError) -> Int?
    {
        let pid = self.pid
        let outcome: Result<Int, UplinkError> = lab.with { state in
            guard let port = (1...state.capacity).first(where: { state.ports[$0] == nil }) else {
                return .failure(.notAttached(pid: pid, ctlDir: ctlDir, waited: timeout, cause: nil))
            }
            state.ports[port] = pid
            return .success(port)
        }
        return try outcome.get()
    }

    func terminate(grace: Duration) async { exit(reason: "terminated") }
}

struct FakeUplinkLauncher: UplinkLauncher {
    let lab: FakeLab

    func start(ctlDir: String, url: UplinkURL, logger: Logger) async throws(UplinkError) -> any RunningUplink {
        if let failure = lab.with({ $0.uplinkFailure }) { throw failure }
        let uplink = FakeUplink(lab: lab, url: url)
        lab.with { $0.uplinks.append(uplink) }
        return uplink
    }

    /// The leftover is adopted when it runs with the spec's URL, stopped otherwise.
    func adoptLeftover(pidFile: UplinkPIDFile, ctlDir: String, url: UplinkURL?, logger: Logger) async
        -> (any RunningUplink)?
    {
        let leftover = lab.with { state in
            defer { state.leftoverUplink = nil }
            return state.leftoverUplink
        }
        guard let leftover, !leftover.uplink.hasExited else { return nil }
        if leftover.url == url { return leftover.uplink }
        leftover.uplink.exit(reason: "stopped as a leftover")
        lab.with { $0.stoppedLeftoverUplinks.append(leftover.uplink) }
        return nil
    }
}

extension FakeLab {
    var uplinks: [FakeUplink] { with { $0.uplinks } }
    var runningUplink: FakeUplink? { with { $0.uplinks.last { !$0.hasExited } } }
    var announcements: [[String]] { with { $0.detachedCommands.filter { $0.contains("arping") } } }
}

extension FakeWorkerFixture {
    static let uplinkURL: UplinkURL = "vxvde://239.255.16.200/if=vxuFake"

    /// The fixture's spec with an uplink.
    func spec(uplink: UplinkURL = FakeWorkerFixture.uplinkURL) -> SwitchSpec {
        var spec = self.spec
        spec.uplink = uplink
        return spec
    }
}
