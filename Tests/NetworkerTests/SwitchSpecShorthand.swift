import Shared

extension SwitchSpec {
    /// A spec with its paths, both checked as the supervisor's would be (tests spell the paths out).
    init(
        networkDir: String, ctlDir: String, managementSocket: String?, mode: SwitchMode, group: GroupName?,
        numPorts: Int
    ) throws {
        try self.init(
            paths: NetworkPaths(networkDir: networkDir, ctlDir: ctlDir, managementSocket: managementSocket),
            mode: mode, group: group, numPorts: numPorts)
    }
}
