/// libFuzzer target: bytes on the worker link, cut into lines by ``LineFramer`` and decoded the
/// way both ends decode them: the worker reads ``WorkerRequest``s (``IncomingLine/decode``), the
/// supervisor ``WorkerMessage``s (`WorkerLink.received`).
///
/// The first input byte sets the chunk size the stream is fed in (1...16 bytes, as a pipe may
/// deliver it); the rest is the stream. Checked besides "no crash, no hang":
/// - the framer returns exactly the stream's lines, whatever the chunking;
/// - a framer with a small limit drops long lines and reports their length;
/// - what decodes encodes again and decodes to the same value.
/// Built by `scripts/fuzz` together with the Shared sources (one module, no `import Shared`).

/// Small enough that fuzz inputs (libFuzzer's -max_len, 4096 by default) reach the limit.
let smallLimit = 64

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWorkerProtocol(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let first = input.first else { return 0 }
    let stream = Array(input.dropFirst())
    let chunk = Int(first % 16) + 1

    var framer = LineFramer()
    var limited = LineFramer(maxLineBytes: smallLimit)
    var lines: [LineFramer.Line] = []
    var limitedLines: [LineFramer.Line] = []
    var start = 0
    while start < stream.count {
        let end = min(start + chunk, stream.count)
        lines += framer.feed(stream[start..<end])
        limitedLines += limited.feed(stream[start..<end])
        start = end
    }

    // The framer neither loses nor invents bytes: its lines are the stream's lines.
    let expected = stream.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast()
    precondition(lines.count == expected.count, "framer returned \(lines.count) lines for \(expected.count)")
    for (line, want) in zip(lines, expected) {
        guard case .line(let bytes) = line, bytes.elementsEqual(want) else {
            preconditionFailure("framer changed a line")
        }
    }
    let tail = stream.count - (stream.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0)
    precondition(framer.pendingBytes == tail, "framer holds \(framer.pendingBytes) bytes, the stream ends with \(tail)")
    precondition(
        limitedLines.count == expected.count,
        "limited framer returned \(limitedLines.count) lines for \(expected.count)")
    for (line, want) in zip(limitedLines, expected) {
        switch line {
        case .line(let bytes):
            precondition(
                bytes.count <= smallLimit && bytes.elementsEqual(want), "limited framer passed a long or changed line")
        case .oversized(let length):
            precondition(
                want.count > smallLimit && length == want.count,
                "oversized(\(length)) for a line of \(want.count) bytes")
        }
    }

    for case .line(let bytes) in lines {
        workerSide(bytes)
        supervisorSide(bytes)
    }
    return 0
}

/// As the worker's stdin reader: every line becomes a request, an answerable refusal, or blank.
func workerSide(_ bytes: [UInt8]) {
    switch IncomingLine.decode(bytes) {
    case .request(let request):
        guard let again = try? JSONCoding.encode(request) else {
            preconditionFailure("a decoded request does not encode")
        }
        precondition(IncomingLine.decode(again) == .request(request), "a request does not survive encode and decode")
    case .invalid(_, let reason):
        precondition(!reason.isEmpty, "a refusal without a reason")
    case .blank, .oversized:
        break
    }
}

/// As `WorkerLink.received`: empty lines are skipped, the rest decoded as a message.
func supervisorSide(_ bytes: [UInt8]) {
    guard !bytes.isEmpty else { return }
    let message: WorkerMessage
    do {
        message = try JSONCoding.decode(WorkerMessage.self, from: bytes)
    } catch {
        _ = JSONCoding.describe(error)
        return
    }
    guard let again = try? JSONCoding.encode(message) else { preconditionFailure("a decoded message does not encode") }
    precondition(
        (try? JSONCoding.decode(WorkerMessage.self, from: again)) == message,
        "a message does not survive encode and decode")
}
