import Shared

/// The stderr of the worker's children (`vde_switch`, `vde_plug2tap`): a small pipe each
/// (``PipeLines/open()``), read by the process's one pipe-reading thread.
enum ChildErrorPipe {
    /// The longest stderr line kept whole; longer ones are reported as dropped.
    static let maxLineBytes = 2048

    /// The lines the child writes until it exits (a flood keeps only the newest 64 unread lines).
    static func lines(from fd: Int32) -> AsyncMapSequence<AsyncStream<LineFramer.Line>, String> {
        PipeLines.lines(from: fd, maxLineBytes: maxLineBytes, bufferingPolicy: .bufferingNewest(64))
            .map { line in
                switch line {
                case .line(let bytes): String(decoding: bytes, as: UTF8.self)
                case .oversized(let length): "(a line of \(length) bytes, dropped)"
                }
            }
    }
}
