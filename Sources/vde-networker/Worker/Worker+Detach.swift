import Logging
import Shared

extension Worker {
    /// Ends this worker's management of the network and leaves its data path running: the
    /// switch and every plug stay up, untouched, for the next worker to adopt (issue 11: the
    /// data path outlives its managers). Only `shutdown` stops them.
    ///
    /// Stops everything that watches: the tap watches (their duplicates of the plugs' tun
    /// descriptors are closed), the tap poll, restart tasks, and the exit handlers of the switch
    /// and the plugs (the pidfd of a process that is not the worker's child is closed; a plug
    /// that is its child keeps its pidfd only so that it is reaped, should it exit first).
    /// Requests after it fail as during a shutdown. The pid files stay: they are how the next worker finds what to adopt. An operation in
    /// progress is not waited for: a plug it starts has its pid file from the moment it runs
    /// (``attachPlug(endpointID:at:)``), and the `creating/` and `deleting/` markers cover the
    /// rest.
    func detach(reason: String) async {
        guard !detached, shutdownTask == nil else { return }
        detached = true
        shuttingDown = true
        logger.info("detaching (\(reason)): the switch, plugs and uplink keep running")
        // Captures do not outlive their worker: each command gets its end record, and the
        // switch keeps no capture plugin.
        await endAllCaptures(reason: "the network's worker is exiting (\(reason))")
        tapPollTask?.cancel()
        tapPollTask = nil
        for task in restartTasks { task.cancel() }
        restartTasks = []
        for endpoint in endpoints.values { endpoint.plug?.stopWatching() }
        switchProcess?.stopWatching()
        uplink?.process?.stopWatching()
    }
}
