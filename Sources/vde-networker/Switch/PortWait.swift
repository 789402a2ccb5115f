/// Waiting for a client of the switch (a plug, the uplink) to show on a port: what both
/// ``PlugProcess`` and ``UplinkProcess`` do after they start one, each with its own error.
enum PortWait {
    enum Outcome {
        /// The port that shows `peerPID`; nil when there is no management socket to ask and the
        /// client still ran after a short while.
        case attached(port: Int?)
        /// The client exited first.
        case exited(ChildExit)
        /// No port showed it in time; `cause` is the management socket's last error, if any.
        case timedOut(cause: String?)
    }

    /// Polls the port list every 3 ms until a port shows `peerPID`: a client takes a few
    /// milliseconds to connect, every CreateEndpoint waits here, and one look at the port list
    /// costs the switch well under a millisecond. Without a management socket it can only check
    /// that the client still runs after 150 ms.
    static func until(
        peerPID: Int32, management: (any SwitchManagement)?, timeout: Duration, exit: () -> ChildExit?
    ) async -> Outcome {
        guard let management else {
            try? await Task.sleep(for: .milliseconds(150))
            return exit().map(Outcome.exited) ?? .attached(port: nil)
        }
        let deadline = ContinuousClock.now + timeout
        var lastError: ManagementError?
        while true {
            if let exit = exit() { return .exited(exit) }
            do {
                let ports = try await management.ports()
                lastError = nil
                if let port = ports.first(where: { $0.peerPID == peerPID }) { return .attached(port: port.port) }
            } catch {
                lastError = error
            }
            if ContinuousClock.now >= deadline {
                return exit().map(Outcome.exited) ?? .timedOut(cause: lastError?.description)
            }
            try? await Task.sleep(for: .milliseconds(3))
        }
    }
}
