import Shared

/// One endpoint as the worker runs it: its spec, its plug, and what to do when the plug exits.
struct ManagedEndpoint: Sendable {
    var spec: EndpointSpec
    var state: PlugState
    /// The running plug; nil when none runs. Cleared *before* a plug is stopped on purpose, so
    /// that its exit is not taken for a crash.
    var plug: (any RunningPlug)?
    var port: Int?
    var backoff = RestartBackoff.child
    /// Why the endpoint is in its state (`unreachable`, `tapGone`), for status.
    var detail: String?

    func status(counters: PortCounters? = nil) -> EndpointStatus {
        EndpointStatus(
            endpointID: spec.endpointID, tapName: spec.tapName, macAddress: spec.macAddress,
            state: state, plugPID: plug?.pid, port: counters?.port ?? port, counters: counters,
            detail: state == .plugged || state == .linkDown ? nil : detail,
            link: spec.link.flatMap { $0.isDefault ? nil : $0 }, linkManagementSocket: plug?.managementSocket)
    }
}
