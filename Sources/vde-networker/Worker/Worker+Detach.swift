import Logging
import Shared

extension Worker {
    /// Ends this worker's management of the network and leaves its data path running: the
    /// switch and every plug stay up, untouched, for the next worker to adopt (issue 11: the
    /// data path outlives its managers). Only `shutdown` stops them.
    func detach(reason: String) async {
        logger.info("detaching (\(reason)): the switch and plugs keep running")
        tapPollTask?.cancel()
        for task in restartTasks { task.cancel() }
    }
}
