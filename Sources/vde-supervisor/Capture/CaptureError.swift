/// What went wrong in `vde-supervisor capture` (the Capture module's one error type): a message
/// for the user, and whether it is the reader of stdout going away, which ends a capture
/// cleanly (`| head`, a closed Wireshark) rather than in error.
struct CaptureError: Error, Equatable {
    var message: String
    var readerGone = false

    init(_ message: String, readerGone: Bool = false) {
        self.message = message
        self.readerGone = readerGone
    }
}
