import Shared
import Testing

@testable import vde_supervisor

/// What the plugin keeps in memory of one network (``LiveNetwork``): the statuses a worker reports.
@Suite struct LiveNetworkTests {
    private static func status(_ id: EndpointID, _ state: PlugState, pid: Int32? = nil) -> EndpointStatus {
        EndpointStatus(
            endpointID: id, tapName: TapName(endpoint: id), macAddress: "02:00:00:00:00:01", state: state, plugPID: pid)
    }
    private static let switchStatus = SwitchStatus(
        ctlDir: "/run/x/ctl", managementSocket: "/run/x/mgmt", owned: true, pid: 7, numPorts: 32)

    @Test func startReplyRecordsTheSwitchAndReturnsTheGoneEndpoints() {
        var network = LiveNetwork()
        let gone = network.workerStarted(
            NetworkWorker.Started(
                switchStatus: Self.switchStatus,
                endpoints: [Self.status("a", .restarting), Self.status("b", .tapGone), Self.status("c", .restarting)]),
            recorded: ["a", "b"])
        #expect(gone == ["b"])
        #expect(network.switchStatus == Self.switchStatus)
        #expect(network.endpoints["a"]?.state == .restarting)
        #expect(network.endpoints["c"] == nil, "an endpoint the state does not record is not kept")
    }

    /// An `endpointState` event handled before the start reply (they race) is not overwritten by
    /// the reply's `restarting`.
    @Test func anEarlierEventOfTheSameWorkerWinsOverTheReply() {
        var network = LiveNetwork()
        network.workerSaidHello()
        let record = EndpointRecord(
            id: "a", networkID: "n", tapName: "vdea", macAddress: "02:00:00:00:00:01", macGenerated: true)
        network.endpointStateChanged(record, to: .plugged, pid: 42, detail: nil)
        _ = network.workerStarted(
            NetworkWorker.Started(switchStatus: Self.switchStatus, endpoints: [Self.status("a", .restarting)]),
            recorded: ["a"])
        #expect(network.endpoints["a"]?.state == .plugged)
        #expect(network.endpoints["a"]?.plugPID == 42)
    }

    @Test func helloVoidsWhatTheEarlierWorkerReported() {
        var network = LiveNetwork(endpoints: ["a": Self.status("a", .plugged, pid: 5)])
        network.workerSaidHello()
        #expect(network.endpoints.isEmpty)
    }

    @Test func aPlugPIDIsKeptOnlyWhilePlugged() {
        var network = LiveNetwork(endpoints: ["a": Self.status("a", .plugged, pid: 5)])
        let record = EndpointRecord(
            id: "a", networkID: "n", tapName: "vdea", macAddress: "02:00:00:00:00:01", macGenerated: true)
        network.endpointStateChanged(record, to: .unreachable, pid: 9, detail: "nsenter failed")
        #expect(network.endpoints["a"]?.state == .unreachable)
        #expect(network.endpoints["a"]?.plugPID == nil)
        #expect(network.endpoints["a"]?.detail == "nsenter failed")
    }

    @Test func onlyANetworkBeingCreatedReservesItsSpec() throws {
        let spec = try SwitchSpec(
            networkDir: "/run/x", ctlDir: "/run/x/ctl", managementSocket: "/run/x/mgmt", mode: .own, group: nil,
            numPorts: 32)
        #expect(LiveNetwork(change: .creating(spec)).reservedSpec == spec)
        #expect(LiveNetwork(change: .deleting).reservedSpec == nil)
        #expect(LiveNetwork().reservedSpec == nil)
    }
}
