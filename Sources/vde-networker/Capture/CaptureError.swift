import Shared

/// Why a capture cannot be set up, or why one ended. The capture module's one error type.
struct CaptureError: ReportableError, CustomStringConvertible {
    var vdeError: VDEError
    var description: String { vdeError.message }

    /// A segment capture loads the capture plugin into the switch: only into one this worker
    /// started, and only through its management socket.
    static func segmentNeedsOwnedSwitch(ctlDir: String) -> CaptureError {
        CaptureError(
            vdeError: .unavailable(
                "cannot capture the whole segment of the switch at \(ctlDir): vde-supervisor did not start it, and it loads its capture plugin only into switches it started; capture one container instead (vde-supervisor capture NETWORK CONTAINER)"
            ))
    }

    static func segmentNeedsManagementSocket(ctlDir: String) -> CaptureError {
        CaptureError(
            vdeError: .unavailable(
                "cannot capture the whole segment of the switch at \(ctlDir): it has no management socket, through which the capture plugin is loaded; capture one container instead (vde-supervisor capture NETWORK CONTAINER)"
            ))
    }

    static func switchNotRunning() -> CaptureError {
        CaptureError(vdeError: .unavailable("the network's switch is restarting: try the capture again in a moment"))
    }

    static func duplicate(_ id: CaptureID) -> CaptureError {
        CaptureError(vdeError: .conflict("a capture with the ID \(id) runs already"))
    }

    static func system(_ what: String, _ error: any Error) -> CaptureError {
        CaptureError(vdeError: .system("\(what): \(error)"))
    }
}
