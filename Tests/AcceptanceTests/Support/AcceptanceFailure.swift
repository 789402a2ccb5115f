/// A failure of the acceptance harness or of a checked precondition, with a message that
/// tells the reader what was expected and what was seen.
struct AcceptanceFailure: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// The message every test prints when the machine lacks what the suites need.
let runScriptsTestHint = "run scripts/test (it installs the packages, starts dockerd and builds the image)"
